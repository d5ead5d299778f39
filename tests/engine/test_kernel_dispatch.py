"""The whole engine with decode attention through the cascade kernel (issue 15 item 3, a test-only dispatch mode):
TorchRunner.use_kernel_attention routes every decode step's attention through ops.cascade_attention over a paged
view of the KV (runners/kernel_attention.py): the CPU twin, and the CUDA kernel source under the SIMT emulator. Same
P(A) as the reference path (torch SDPA) within 1e-4 and the same greedy reasoning text, and the shared (cascade)
path must actually have been taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c4u_engine.api import Engine
from c4u_engine.errors import InvalidInputError
from c4u_engine.ops.dispatch import emulated_why_not
from c4u_engine.runners.kernel_attention import CascadeDecodeAttention
from tiny_checkpoint import make_test_image

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}
_NO_EMULATOR = pytest.mark.skipif(emulated_why_not() is not None, reason=f"{emulated_why_not()}")


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(3)]


@pytest.fixture(scope="module")
def reference(tiny_ckpt, images):
    return Engine(tiny_ckpt, backend="torch").select(images, PROFILE, mode="reason", strategy="round_robin",
                                                     max_new_tokens=6)


@pytest.mark.parametrize("kernels", ["cpu", pytest.param("emulated", marks=_NO_EMULATOR),
                                     pytest.param("cuda", marks=pytest.mark.cuda)])
def test_engine_through_the_kernels_matches_the_reference(tiny_ckpt, images, reference, kernels):
    device = "cuda" if kernels == "cuda" else "cpu"
    if device == "cuda":  # the reference path on the same device (SDPA on CUDA)
        reference = Engine(tiny_ckpt, backend="torch", device=device).select(
            images, PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6)
    engine = Engine(tiny_ckpt, backend="torch", device=device)
    assert engine.runner.use_kernel_attention(kernels, check_against_sdpa=True) is None
    attention = engine.runner.decode_attention
    got = engine.select(images, PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6)
    assert attention.calls > 0 and attention.shared_slots > 0  # decode ran through the kernel, cascade path taken
    # Every decode step of the run, kernel vs SDPA on the same inputs (the tiny random model's greedy text and
    # its unparseable answers, P(A) = 0.5, would hide a small error on their own).
    assert attention.max_abs_diff <= 1e-5
    assert len(got.comparisons) == len(reference.comparisons) > 0
    for a, b in zip(got.comparisons, reference.comparisons):
        assert (a.first, a.second, a.raw_text, a.reasoning) == (b.first, b.second, b.raw_text, b.reasoning)
        assert abs(a.prob_a - b.prob_a) <= 1e-4
    assert got.ranking == reference.ranking


def test_mask_holes_and_groups_match_sdpa():
    """The paged view attends exactly the mask's slots (holes anywhere) and groups rows that share leading slots."""
    gen = torch.Generator().manual_seed(0)
    b, heads, kv_heads, length, d = 4, 4, 2, 9, 64
    keys = torch.randn((b, kv_heads, length, d), generator=gen)
    values = torch.randn((b, kv_heads, length, d), generator=gen)
    keys[1, :, :5], values[1, :, :5] = keys[0, :, :5], values[0, :, :5]  # rows 0 and 1 share 5 slots
    keys[:, :, 6] = float("nan")  # a padded slot nobody may read
    mask = torch.ones((b, 1, 1, length), dtype=torch.bool)
    mask[:, :, :, 6] = False
    mask[2, :, :, :3] = False  # left padding
    q = torch.randn((b, heads, 1, d), generator=gen)
    attention = CascadeDecodeAttention("cpu")
    got = attention(q, keys, values, mask)
    want = torch.nn.functional.scaled_dot_product_attention(q, keys.nan_to_num(0), values, attn_mask=mask,
                                                            enable_gqa=True)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6)
    assert attention.shared_slots == 5
    with pytest.raises(InvalidInputError, match="one query token"):
        attention(q.expand(b, heads, 2, d), keys, values, mask)


def test_why_not_instead_of_a_wrong_path(tiny_ckpt):
    from c4u_engine.errors import BackendUnavailableError

    engine = Engine(tiny_ckpt, backend="torch")
    reason = engine.runner.use_kernel_attention("cuda", strict=False)
    assert reason and "cuda" in reason.lower() and engine.runner.decode_attention is None
    with pytest.raises(BackendUnavailableError, match="kernel attention on 'cuda'"):
        engine.runner.use_kernel_attention("cuda")
    with pytest.raises(BackendUnavailableError, match="must be one of"):
        engine.runner.use_kernel_attention("tpu")
    from c4u_engine.runners.kernel_attention import why_not

    assert "head_dim 256 exceeds" in why_not("cpu", "cpu", torch.float32, 256)
    assert "float64" in why_not("cpu", "cpu", torch.float64, 64)
    assert why_not("cpu", "cpu", torch.bfloat16, 128) is None
