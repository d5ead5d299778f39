"""Engine.select / Engine.compare on a tiny random checkpoint: reuse is exact, results are reproducible."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.engine.kv_store import KVStore, make_key
from c4u_engine.engine.spans import ComparisonSpans
from c4u_engine.profile import Profile
from c4u_engine.errors import C4UError, InvalidImageError, InvalidInputError, LimitExceededError, ProfileError

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}


def _softmax2(logits: np.ndarray, ids: tuple[int, int]) -> float:
    a, b = float(logits[ids[0]]), float(logits[ids[1]])
    return 1.0 / (1.0 + np.exp(b - a))


@pytest.fixture(scope="module", params=["contiguous", "paged"])
def engine(tiny_ckpt, request):
    # Every engine test runs on both KV layouts (the paged one through the paged-KV CPU twins, odd block size).
    return Engine(tiny_ckpt, backend="torch", kv_layout=request.param, kv_block_size=7)


@pytest.fixture(scope="module")
def images():
    # one shared size (the common case) plus two odd sizes so batches need padding
    return [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(90, 45, 11),
                                                                 make_test_image(40, 70, 12)]


@pytest.mark.parametrize("pair", [(0, 4), (5, 1), (2, 3)])
def test_compare_equals_logits_of_comparison_messages(engine, images, pair):
    a, b = (images[i] for i in pair)
    c = engine.compare(a, b, PROFILE, mode="fast")
    messages, prefix = engine.comparison_messages(a, b, PROFILE, mode="fast")
    expected = _softmax2(engine.logits(messages, prefix), engine.answer_token_ids)
    assert abs(c.prob_a - expected) < 1e-5
    assert c.answer == ("A" if expected >= 0.5 else "B") and c.mode == "fast"
    assert (c.first, c.second) == (0, 1)


@pytest.mark.parametrize("strategy", ["knockout", "round_robin"])
def test_select_with_caches_disabled_equals_warm_caches(tiny_ckpt, images, strategy):
    cold = Engine(tiny_ckpt, backend="torch", encoder_cache_bytes=0, prefix_cache_bytes=0)
    warm = Engine(tiny_ckpt, backend="torch")
    warm.select(images, PROFILE, strategy=strategy)  # fill the caches
    a = cold.select(images, PROFILE, strategy=strategy, use_cache=False)
    b = warm.select(images, PROFILE, strategy=strategy)
    assert b.stats.get("prefix_cache_hits", 0) > 0 and b.stats.get("images_cached", 0) == len(images)
    assert a.ranking == b.ranking and a.winner == b.winner
    assert [(c.first, c.second, c.answer) for c in a.comparisons] == \
        [(c.first, c.second, c.answer) for c in b.comparisons]
    for x, y in zip(a.comparisons, b.comparisons):
        assert abs(x.prob_a - y.prob_a) < 1e-5


def test_batched_round_equals_single_comparisons(engine, images):
    sel = engine.select(images, PROFILE, strategy="round_robin", use_cache=False)
    assert len(sel.comparisons) == len(images) * (len(images) - 1)
    for c in sel.comparisons[::7]:
        single = engine.compare(images[c.first], images[c.second], PROFILE, use_cache=False)
        assert abs(single.prob_a - c.prob_a) < 1e-5


def test_different_images_with_identical_text_never_share_cache(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch")
    a1, a2 = make_test_image(56, 56, seed=100), make_test_image(56, 56, seed=101)  # same grid, same tokens
    first = eng.compare(a1, images[1], PROFILE)
    second = eng.compare(a2, images[1], PROFILE)  # must not reuse a1's prefix KV
    fresh = Engine(tiny_ckpt, backend="torch", encoder_cache_bytes=0, prefix_cache_bytes=0)
    assert abs(second.prob_a - fresh.compare(a2, images[1], PROFILE, use_cache=False).prob_a) < 1e-5
    assert abs(first.prob_a - second.prob_a) > 1e-7


def test_prefix_cache_key_includes_image_hashes():
    store = KVStore(1 << 20, lambda kv: 8)
    ids = [1, 2, 3, 9, 9, 9, 4]
    k1 = make_key(ids, [("hash-one", (1, 2, 2))])
    k2 = make_key(ids, [("hash-two", (1, 2, 2))])
    k3 = make_key(ids, [("hash-one", (1, 4, 1))])  # same pad count, other grid: other positions
    k4 = make_key(ids, [("hash-one", (1, 2, 2))], scope="request-7")  # a private entry of another request
    store.release(store.insert(k1, object(), np.ones(7, bool), 6))
    assert store.acquire(k1) is not None
    assert store.acquire(k2) is None and store.acquire(k3) is None and store.acquire(k4) is None


def test_threads_get_sequential_results(engine, images):
    sequential = [engine.select(images[: 3 + k % 3], PROFILE, strategy="knockout") for k in range(8)]
    results: list = [None] * 8
    errors: list = []

    def work(k: int) -> None:
        try:
            results[k] = engine.select(images[: 3 + k % 3], PROFILE, strategy="knockout")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    for s, r in zip(sequential, results):
        assert s.ranking == r.ranking
        assert all(abs(x.prob_a - y.prob_a) < 1e-5 for x, y in zip(s.comparisons, r.comparisons))


def test_reason_mode_batched_decode_equals_single_chat(engine, images):
    sel = engine.select(images[:3], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=12)
    assert len(sel.comparisons) == 6
    for c in sel.comparisons:  # every batched row equals its comparison generated alone
        messages, prefix = engine.comparison_messages(images[c.first], images[c.second], PROFILE, mode="reason")
        solo = engine.chat(messages, max_new_tokens=12, assistant_prefix=prefix)
        assert c.raw_text == prefix + solo.text
        if c.answer is None:  # a random model rarely writes a parsable answer: it must be reported, not guessed
            assert c.error


def test_hybrid_explains_the_winner(engine, images):
    sel = engine.select(images[:4], PROFILE, mode="hybrid", max_new_tokens=8)
    reasoned = [c for c in sel.comparisons if c.mode == "reason"]
    assert reasoned and all(sel.winner in (c.first, c.second) for c in reasoned)
    assert sel.stats["hybrid_reasoned"] == len(reasoned)
    # the reasoning re-judges exactly the deciding pairs: the winner's knockout matches, both orders
    assert sorted((c.first, c.second) for c in reasoned) == sorted(sel.deciding_pairs)
    assert len(sel.comparisons) == 6 + len(reasoned)
    # the explanation quotes the reasoning of the deciding comparisons, each under its pair's heading
    expected = [f"[{c.first} as A vs {c.second} as B: " for c in sel.deciding_comparisons if c.reasoning
                and c.reasoning.strip()]
    if expected:
        assert all(h in sel.explanation for h in expected)
    else:
        assert sel.explanation is None


def test_stats_count_work(engine, images):
    sel = engine.select(images[:4], PROFILE, strategy="round_robin", use_cache=False)
    st = sel.stats
    assert st["comparisons"] == 12 and st["images_encoded"] == 4 and "prefill_comparisons" in st["seconds"]
    # new tokens follow from the spans: the system turn, the profile, four images A, twelve (B + question) rows
    spans = ComparisonSpans(engine.core.session, engine.prompt, engine.answer, Profile.coerce(PROFILE))
    grid = engine.core.session.grid_of(engine.core.session.load_images([images[0]])[0])
    layout = spans.layout(grid, grid, "fast")
    assert len({engine.core.session.grid_of(engine.core.session.load_images([im])[0]) for im in images[:4]}) == 1
    assert st["tokens_prefilled"] == len(spans.prefix_ids) + 4 * (layout.a_end - len(spans.prefix_ids)) + \
        12 * (len(layout.ids) - layout.a_end)


# -- bad input, service-friendly -------------------------------------------------------------------------
def test_invalid_candidates_are_rejected_with_reasons(engine, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    sel = engine.select([images[0], str(bad), images[1], np.zeros((0, 5, 3), np.uint8), 42], PROFILE)
    assert set(sel.rejected) == {1, 3, 4}
    assert all(isinstance(r, str) and r for r in sel.rejected.values())
    assert sorted(sel.ranking) == [0, 2]
    with pytest.raises(InvalidImageError):
        engine.select([images[0], str(bad)], PROFILE, strict=True)


def test_zero_valid_candidates_is_an_error(engine, tmp_path):
    with pytest.raises(InvalidInputError, match="no valid candidate"):
        engine.select([str(tmp_path / "missing.png")], PROFILE)
    with pytest.raises(InvalidInputError):
        engine.select([], PROFILE)


def test_one_candidate_wins_without_comparison(engine, images):
    sel = engine.select([images[2]], PROFILE)
    assert sel.winner == 0 and sel.comparisons == [] and sel.ranking == [0]


def test_duplicates_are_compared_once_and_reported(engine, images):
    sel = engine.select([images[0], images[1], images[0].copy(), images[1]], PROFILE, strategy="round_robin")
    assert sel.duplicates == {2: 0, 3: 1}
    assert len(sel.comparisons) == 2 and sorted(sel.ranking) == [0, 1, 2, 3]
    assert sel.stats["images_encoded"] + sel.stats.get("images_cached", 0) == 2


def test_limits_and_unknown_options_name_the_valid_values(engine, images):
    with pytest.raises(LimitExceededError, match="max_candidates"):
        Engine.select(engine, [images[0]] * 65, PROFILE)
    with pytest.raises(InvalidInputError, match="fast, reason, hybrid"):
        engine.select(images[:2], PROFILE, mode="slow")
    with pytest.raises(InvalidInputError, match="knockout, round_robin"):
        engine.select(images[:2], PROFILE, strategy="swiss")
    with pytest.raises(ProfileError):
        engine.select(images[:2], {"title": ""})
    with pytest.raises(ProfileError, match="special token"):
        engine.select(images[:2], {"title": "shoes <|image_pad|>"})


def test_profile_too_long_for_context(tiny_ckpt_factory, images):
    small = Engine(tiny_ckpt_factory(text=dict(max_position_embeddings=600)), backend="torch")
    with pytest.raises(LimitExceededError, match="context"):
        small.select(images[:2], {"title": "shoes", "extra": "waterproof trail running shoes " * 120})


def test_errors_are_c4u_errors(engine):
    with pytest.raises(C4UError):
        engine.compare(b"not an image", b"", PROFILE)
