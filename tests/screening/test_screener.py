"""The onnxruntime screener on a tiny exported model: parity with torch, batching, verdicts, typed errors."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from c4u_engine.data.usability import sample
from c4u_engine.errors import InvalidInputError, ProductImageError, ScreeningModelError
from c4u_engine.screening import Screener
from c4u_engine.screening.model_dir import CONFIG_FILE
from c4u_engine.screening.preprocess import generated_planes, product_planes, text_ids

SAMPLES = [sample(9, i) for i in range(5)]


@pytest.fixture(scope="module")
def screener(tiny_screen_dir):
    return Screener(tiny_screen_dir)


@pytest.mark.parametrize("with_product", [True, False])
def test_onnxruntime_equals_torch(tiny_screen_dir, screener, with_product):
    torch = pytest.importorskip("torch")
    from c4u_engine.screening.reward import load_rfnet

    net = load_rfnet(tiny_screen_dir)
    s0 = SAMPLES[0]
    got = screener.probabilities([s.generated for s in SAMPLES], s0.text, s0.product if with_product else None)
    n = len(SAMPLES)
    gen = torch.from_numpy(np.stack([generated_planes(s.generated) for s in SAMPLES]))
    prod = torch.from_numpy(np.stack([product_planes(s0.product)] * n)) if with_product else \
        torch.zeros(n, 4, 64, 64, dtype=torch.uint8)
    with torch.no_grad():
        want = net(gen, prod, torch.from_numpy(np.stack([text_ids(s0.text)] * n)),
                   torch.full((n,), 1.0 if with_product else 0.0)).softmax(-1).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)


def test_the_product_image_changes_the_answer(screener):
    s0 = SAMPLES[0]
    full = screener.probabilities([s0.generated], s0.text, s0.product)
    text_only = screener.probabilities([s0.generated], s0.text)
    assert np.abs(full - text_only).max() > 1e-4


def test_chunked_batches_equal_one_batch(tiny_screen_dir, screener):
    small = Screener(tiny_screen_dir, batch=2)
    args = ([s.generated for s in SAMPLES], SAMPLES[1].text, SAMPLES[1].product)
    got = small.probabilities(*args, use_cache=False)
    assert np.abs(got - screener.probabilities(*args, use_cache=False)).max() < 1e-5


def test_verdicts_are_cached_by_ad_cutout_and_text(tiny_screen_dir):
    cached = Screener(tiny_screen_dir)
    ads = [s.generated for s in SAMPLES]
    s0, s1 = SAMPLES[0], SAMPLES[1]
    first, hits = cached.probabilities_and_hits(ads[:3], s0.text, s0.product)
    assert hits == 0
    again, hits = cached.probabilities_and_hits(ads, s0.text, s0.product)  # 3 known, 2 new
    assert hits == 3 and np.array_equal(again[:3], first)
    fresh = Screener(tiny_screen_dir, cache_bytes=0)
    assert np.abs(again - fresh.probabilities(ads, s0.text, s0.product)).max() < 1e-5
    # another cut-out, another text, the image+text mode: each its own verdicts
    for args in ((s0.text, s1.product), (s1.text, s0.product), (s0.text, None)):
        probs, hits = cached.probabilities_and_hits(ads[:2], *args)
        assert hits == 0
        assert np.abs(probs - fresh.probabilities(ads[:2], *args)).max() < 1e-5
    # the same ad as a PIL image, an array, or a LoadedImage is one key
    from c4u_engine.imaging import load_image

    for form in (Image.fromarray(np.asarray(ads[0])), np.asarray(ads[0]), load_image(np.asarray(ads[0]))):
        assert cached.probabilities_and_hits([form], s0.text, s0.product)[1] == 1
    assert cached.probabilities_and_hits(ads, s0.text, s0.product, use_cache=False)[1] == 0
    cached.clear_cache()
    assert cached.probabilities_and_hits(ads[:1], s0.text, s0.product)[1] == 0
    assert fresh.probabilities_and_hits(ads[:1], s0.text, s0.product)[1] == 0  # cache_bytes=0 keeps nothing
    with pytest.raises(InvalidInputError, match="cache_bytes"):
        Screener(tiny_screen_dir, cache_bytes=-1)


def test_verdicts_follow_the_threshold(tiny_screen_dir):
    s0 = SAMPLES[0]
    p = Screener(tiny_screen_dir).probabilities([s0.generated], s0.text, s0.product)[0]
    strict = Screener(tiny_screen_dir, threshold=min(0.99, float(p[0]) + 0.01)).verdict(p)
    lenient = Screener(tiny_screen_dir, threshold=max(0.01, float(p[0]) - 0.01)).verdict(p)
    assert lenient.usable and lenient.label == "available"
    assert not strict.usable and strict.label != "available"
    assert strict.probability == pytest.approx(float(p[1:].max()))
    assert strict.reason == f"unusable: {strict.label.replace('_', ' ')} (p={strict.probability:.2f})"


def test_reason_format(screener):
    probs = np.array([0.02, 0.01, 0.03, 0.02, 0.91, 0.01], np.float32)
    assert screener.verdict(probs).reason == "unusable: shape hallucination (p=0.91)"


def test_full_mode_needs_the_product_image(screener):
    with pytest.raises(ProductImageError, match="needs the product image"):
        screener.screen([SAMPLES[0].generated], "a watch", None, mode="full")


@pytest.mark.parametrize("product", [b"not an image", "/nonexistent/cutout.png", np.zeros((4, 4), np.uint8)])
def test_an_unreadable_product_image_is_a_typed_error(screener, product):
    with pytest.raises(ProductImageError):
        screener.screen([SAMPLES[0].generated], "a watch", product)


def test_a_product_shot_on_white_gets_an_alpha_channel():
    from c4u_engine.screening.product_image import load_product_image

    shot = Image.new("RGB", (20, 20), (255, 255, 255))
    shot.paste((10, 120, 200), (5, 5, 15, 15))
    buf = io.BytesIO()
    shot.save(buf, "JPEG", quality=95)
    alpha = np.asarray(load_product_image(buf.getvalue()).getchannel("A"))
    assert alpha[10, 10] == 255 and alpha[0, 0] == 0
    with pytest.raises(ProductImageError, match="no product"):
        load_product_image(Image.new("RGB", (8, 8), (255, 255, 255)))


def test_wrong_model_directories_are_typed_errors(tmp_path, tiny_screen_dir, tiny_ckpt):
    with pytest.raises(ScreeningModelError, match="does not exist"):
        Screener(tmp_path / "nope")
    with pytest.raises(ScreeningModelError, match="a judge checkpoint"):
        Screener(tiny_ckpt)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_screen_dir, bad)
    config = json.loads((bad / CONFIG_FILE).read_text())
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "side": 96}))
    with pytest.raises(ScreeningModelError, match="side=96"):
        Screener(bad)
    (bad / CONFIG_FILE).write_text(json.dumps({**config, "classes": ["available", "bad"]}))
    with pytest.raises(ScreeningModelError, match="classes"):
        Screener(bad)
    (bad / CONFIG_FILE).write_text(json.dumps(config))
    (bad / "rfnet.onnx").write_bytes(b"garbage")
    with pytest.raises(ScreeningModelError, match="onnxruntime cannot load"):
        Screener(bad)


def test_bad_arguments(screener, tiny_screen_dir):
    with pytest.raises(InvalidInputError, match="threshold"):
        Screener(tiny_screen_dir, threshold=1.5)
    with pytest.raises(InvalidInputError, match="mode"):
        screener.screen([SAMPLES[0].generated], "x", mode="fancy")


def test_the_runtime_path_never_imports_torch(tiny_screen_dir):
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
from c4u_engine.data.usability import sample
from c4u_engine.screening import Screener
s = sample(9, 0)
v = Screener({str(tiny_screen_dir)!r}).screen([s.generated], s.text, s.product)
print(len(v), "torch" in sys.modules and sys.modules["torch"] is not None)
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]
