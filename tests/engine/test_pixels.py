"""engine/pixels.py: where preprocessing runs (the dispatch; the GPU path itself is covered by the `cuda` test), and
the device-pixel plumbing through request, scheduler and torch runner, driven on CPU by a stand-in for the kernel."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.runners.base import RunnerCapabilities
from c4u_engine.api import Engine
from c4u_engine.engine import pixels
from c4u_engine.ops.preprocess import PreprocessParams, preprocess

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes"]}


class FakeRunner:
    name = "fake"

    def __init__(self, device: str, takes: bool) -> None:
        self.device = device
        self.capabilities = RunnerCapabilities(concurrent_calls=False, paged_kv=False, paged_decode_rows=False,
                                               kernel_device=None, device_pixels=takes, intra_op_threads=None)


def test_preprocess_device_says_why_not(monkeypatch):
    assert pixels.preprocess_device(FakeRunner("cpu", True)) == ("cpu", "the fake runner computes on cpu")
    assert pixels.preprocess_device(FakeRunner("cuda:0", False)) == ("cpu", "the fake runner takes host pixel values")
    monkeypatch.setattr(pixels, "cuda_why_not", lambda: "no CUDA device is visible")
    assert pixels.preprocess_device(FakeRunner("cuda:0", True)) == ("cpu", "no CUDA device is visible")
    monkeypatch.setattr(pixels, "cuda_why_not", lambda: None)
    assert pixels.preprocess_device(FakeRunner("cuda:0", True)) == ("cuda", None)


def test_cpu_engines_preprocess_on_cpu(tiny_ckpt):
    engine = Engine(tiny_ckpt, backend="torch")
    assert engine.core.session.preprocess_device == "cpu"
    assert "computes on cpu" in engine.core.session.preprocess_why_not_cuda


def test_concat_pixels_keeps_the_kind():
    torch = pytest.importorskip("torch")
    a, b = np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)
    np.testing.assert_array_equal(pixels.concat_pixels([a, b]), np.concatenate([a, b]))
    joined = pixels.concat_pixels([torch.from_numpy(a), torch.from_numpy(b)])
    assert isinstance(joined, torch.Tensor) and joined.shape == (3, 3)


def test_device_pixels_flow_through_the_engine(tiny_ckpt, monkeypatch):
    """The "cuda" path with the kernel replaced by the CPU kernel returning torch tensors: selections unchanged."""
    torch = pytest.importorskip("torch")
    calls = []

    def fake_preprocess_cuda(images, params: PreprocessParams):
        calls.append(len(images))
        assert all(isinstance(im, torch.Tensor) for im in images)
        values, grid = preprocess([im.numpy() for im in images], params)
        return torch.from_numpy(values), torch.from_numpy(grid)

    images = [make_test_image(56, 56, seed=s) for s in range(3)] + [make_test_image(90, 45, 11)]
    want = Engine(tiny_ckpt, backend="torch").select(images, PROFILE, strategy="round_robin")
    engine = Engine(tiny_ckpt, backend="torch")
    monkeypatch.setattr(pixels, "preprocess_cuda", fake_preprocess_cuda)
    engine.core.session.preprocess_device = "cuda"
    got = engine.select(images, PROFILE, strategy="round_robin")
    assert calls and sum(calls) >= len(images)
    assert got.ranking == want.ranking
    for a, b in zip(got.comparisons, want.comparisons):
        assert abs(a.prob_a - b.prob_a) <= 1e-6


@pytest.mark.cuda
def test_cuda_engine_preprocesses_on_the_gpu(tiny_ckpt):
    images = [make_test_image(56, 56, seed=s) for s in range(3)]
    engine = Engine(tiny_ckpt, backend="torch", device="cuda", dtype="float32")
    assert engine.core.session.preprocess_device == "cuda", engine.core.session.preprocess_why_not_cuda
    want = Engine(tiny_ckpt, backend="torch").select(images, PROFILE, strategy="round_robin")
    got = engine.select(images, PROFILE, strategy="round_robin")
    assert got.ranking == want.ranking
