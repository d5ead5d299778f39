"""select(..., screen=True) on a tiny judge and a tiny screener: who is screened out, what Selection says about it."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.api import Engine
from c4u_engine.data.usability import sample
from c4u_engine.errors import AllScreenedOutError, InvalidInputError, ProductImageError, ScreeningModelError
from c4u_engine.screening import Screener

SAMPLES = [sample(11, i) for i in range(6)]
PRODUCT, TITLE = SAMPLES[0].product, SAMPLES[0].text
IMAGES = [np.asarray(s.generated) for s in SAMPLES]


@pytest.fixture(scope="module")
def p_available(tiny_screen_dir):
    return Screener(tiny_screen_dir).probabilities(IMAGES, TITLE, PRODUCT)[:, 0]


def _engine(tiny_ckpt, tiny_screen_dir, threshold):
    return Engine(tiny_ckpt, backend="torch", screen_model=Screener(tiny_screen_dir, threshold=threshold))


def test_the_unusable_are_rejected_with_class_and_the_rest_ranked(tiny_ckpt, tiny_screen_dir, p_available):
    order = np.argsort(p_available)
    threshold = float(p_available[order[1]] + p_available[order[2]]) / 2  # the two least usable fall below
    engine = _engine(tiny_ckpt, tiny_screen_dir, threshold)
    sel = engine.select(IMAGES, {"title": TITLE}, screen=True, product_image=PRODUCT)
    out = {int(order[0]), int(order[1])}
    assert set(sel.rejected) == out and set(sel.ranking) == set(range(6)) - out
    for i in out:
        assert sel.rejected[i].startswith("unusable: ") and "(p=" in sel.rejected[i]
    s = sel.stats["screening"]
    assert s["screened"] == 6 and s["screened_out"] == sorted(out) and s["batches"] == 1
    assert s["mode"] == "image+product+text" and s["threshold"] == threshold
    assert sel.stats["seconds"]["screen"] > 0
    plain = engine.select(IMAGES, {"title": TITLE})
    assert "screening" not in plain.stats and not plain.rejected and len(plain.ranking) == 6


def test_a_duplicate_of_a_screened_out_candidate_is_rejected_too(tiny_ckpt, tiny_screen_dir, p_available):
    worst = int(np.argmin(p_available))
    threshold = float(np.sort(p_available)[:2].mean())
    engine = _engine(tiny_ckpt, tiny_screen_dir, threshold)
    sel = engine.select(IMAGES + [IMAGES[worst]], {"title": TITLE}, screen=True, product_image=PRODUCT)
    assert set(sel.rejected) == {worst, 6} and sel.rejected[6] == sel.rejected[worst]
    assert 6 not in sel.duplicates


def test_all_screened_out_is_an_error_that_says_so_and_how_to_turn_screening_off(tiny_ckpt, tiny_screen_dir):
    engine = _engine(tiny_ckpt, tiny_screen_dir, 0.999)
    with pytest.raises(AllScreenedOutError, match="unusable: ") as info:
        engine.select(IMAGES[:3], {"title": TITLE}, screen=True, product_image=PRODUCT)
    message = str(info.value)
    assert "screening rejected every candidate" in message and "screen=False" in message
    assert "without --screen and --product" in message and "no valid candidate" not in message
    assert isinstance(info.value, InvalidInputError)  # still a 422 for the server


def test_candidates_the_screener_is_unsure_of_are_kept_and_flagged(tiny_ckpt, tiny_screen_dir, p_available):
    # threshold above every candidate, reject_below between the two least usable and the rest: the least usable is
    # screened out, the others are unsure (below the threshold, above the bound): kept, ranked and flagged.
    order = np.argsort(p_available)
    bound = float(p_available[order[0]] + p_available[order[1]]) / 2
    screener = Screener(tiny_screen_dir, threshold=min(0.99, float(p_available.max()) + 1e-3), reject_below=bound)
    engine = Engine(tiny_ckpt, backend="torch", screen_model=screener)
    sel = engine.select(IMAGES + [IMAGES[int(order[3])]], {"title": TITLE}, screen=True, product_image=PRODUCT)
    worst = int(order[0])
    assert set(sel.rejected) == {worst} and sel.rejected[worst].startswith("unusable: ")
    assert set(sel.flagged) == set(range(7)) - {worst}  # the duplicate (6) shares its original's flag
    assert sel.flagged[6] == sel.flagged[int(order[3])]
    assert all(r.startswith("uncertain: maybe ") and r.endswith("; kept") for r in sel.flagged.values())
    assert set(sel.ranking) | set(sel.duplicates) == set(range(7)) - {worst}
    s = sel.stats["screening"]
    assert s["flagged"] == sorted(set(range(7)) - {worst}) and s["reject_below"] == bound
    assert sel.to_dict()["flagged"] == {str(k): v for k, v in sel.flagged.items()}
    assert type(sel).from_dict(sel.to_dict()).flagged == sel.flagged
    with pytest.raises(InvalidInputError, match="reject_below"):
        Screener(tiny_screen_dir, threshold=0.3, reject_below=0.4)


def test_without_product_image_screening_runs_in_its_image_text_mode(tiny_ckpt, tiny_screen_dir):
    engine = _engine(tiny_ckpt, tiny_screen_dir, 0.01)
    sel = engine.select(IMAGES[:3], {"title": TITLE}, screen=True)
    assert sel.stats["screening"]["mode"] == "image+text" and len(sel.ranking) == 3
    with pytest.raises(ProductImageError, match="needs the product image"):
        engine.select(IMAGES[:3], {"title": TITLE}, screen=True, screen_mode="full")
    with pytest.raises(ProductImageError):
        engine.select(IMAGES[:3], {"title": TITLE}, screen=True, product_image=b"\x89PNG broken")


def test_a_wrong_screen_model_fails_at_engine_construction(tiny_ckpt):
    with pytest.raises(ScreeningModelError, match="a judge checkpoint"):
        Engine(tiny_ckpt, backend="torch", screen_model=tiny_ckpt)


def test_a_screened_selection_judges_the_kept_candidates_exactly_as_a_plain_selection_of_them(
        tiny_ckpt, tiny_screen_dir, p_available):
    # Screening runs while the caller preprocesses every candidate for the judge; the kept ones' pixels must reach
    # the judge unchanged (cold and warm caches: the second call finds the images in the encoder cache).
    worst = int(np.argmin(p_available))
    engine = _engine(tiny_ckpt, tiny_screen_dir, float(np.sort(p_available)[:2].mean()))
    kept = [i for i in range(6) if i != worst]
    plain = engine.select([IMAGES[i] for i in kept], {"title": TITLE}, use_cache=False)
    for use_cache in (False, True, True):
        sel = engine.select(IMAGES, {"title": TITLE}, screen=True, product_image=PRODUCT, use_cache=use_cache)
        assert set(sel.rejected) == {worst}
        assert sel.ranking == [kept[i] for i in plain.ranking]
        got = {(c.first, c.second): c.prob_a for c in sel.comparisons}
        want = {(kept[c.first], kept[c.second]): c.prob_a for c in plain.comparisons}
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in got) < 1e-5
        assert sel.stats["seconds"]["screen_wait"] >= 0


def test_screening_on_a_closed_engine_is_a_typed_error(tiny_ckpt, tiny_screen_dir):
    from c4u_engine.errors import RequestCancelledError

    engine = _engine(tiny_ckpt, tiny_screen_dir, 0.01)
    engine.close()
    with pytest.raises(RequestCancelledError, match="closed"):
        engine.select(IMAGES[:3], {"title": TITLE}, screen=True, product_image=PRODUCT)


def test_a_repeated_selection_reuses_its_screening_verdicts(tiny_ckpt, tiny_screen_dir):
    engine = _engine(tiny_ckpt, tiny_screen_dir, 0.01)
    first = engine.select(IMAGES[:4], {"title": TITLE}, screen=True, product_image=PRODUCT)
    other_user = engine.select(IMAGES[:4], {"title": TITLE, "queries": ["gift"]}, screen=True, product_image=PRODUCT)
    cold = engine.select(IMAGES[:4], {"title": TITLE}, screen=True, product_image=PRODUCT, use_cache=False)
    assert first.stats["screening"]["cached"] == 0 and other_user.stats["screening"]["cached"] == 4
    assert other_user.stats["screening"]["batches"] == 0 and cold.stats["screening"]["cached"] == 0
    assert other_user.stats["screening"]["p_available"] == first.stats["screening"]["p_available"]
    engine.clear_caches()
    assert engine.select(IMAGES[:4], {"title": TITLE}, screen=True,
                         product_image=PRODUCT).stats["screening"]["cached"] == 0


@pytest.mark.parametrize("cache_bytes", [0, 300])  # no verdicts kept; room for about one
def test_concurrent_screened_selections_equal_those_made_alone(tiny_ckpt, tiny_screen_dir, p_available, cache_bytes):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from concurrent_clients import run_clients, same

    threshold = float(np.sort(p_available)[:2].mean())
    engine = Engine(tiny_ckpt, backend="torch", prefix_cache_bytes=0,
                    screen_model=Screener(tiny_screen_dir, threshold=threshold, cache_bytes=cache_bytes))
    reqs = [([IMAGES[(k + j) % 6] for j in range(4)], {"title": TITLE, "queries": [f"q{k}"]}) for k in range(8)]
    alone = [engine.select(im, p, screen=True, product_image=PRODUCT, use_cache=False) for im, p in reqs]
    got = run_clients(engine, reqs, 6, screen=True, product_image=PRODUCT)
    for g, ref in zip(got, alone):
        assert same(g, ref) and g.rejected == ref.rejected
    engine.close()
