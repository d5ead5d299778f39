"""ops.embed_merge and ops.mrope against the references they replace (the runners' embed; models.rope), on the CPU
twin, the CUDA source under every emulator schedule, and (marked `cuda`) the GPU; awkward shapes: odd batches,
several images per row and per batch, padding on either side, text-only and empty rows, video-like grids (t > 1)."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.errors import KernelArgumentError
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.rope import mrope_position_ids as reference_positions
from c4u_engine.ops.embed_merge import embed_merge
from c4u_engine.ops.mrope import mrope_position_ids

IMG = 7  # image-pad token id in these tests
MERGE = 2


def prompt_batch(seed: int, pad: str):
    """ids [B, S], mask, grids: rows with 0, 1 or 2 images of assorted grids, text around them, padding."""
    rng = np.random.default_rng(seed)
    grid_choices = [(1, 4, 6), (1, 2, 2), (2, 4, 4), (1, 6, 2)]
    rows, grids = [], []
    for b in range(5):
        row = list(rng.integers(10, 50, rng.integers(0 if b == 3 else 1, 6)))
        for _ in range(int(rng.integers(0, 3)) if b != 3 else 0):
            g = grid_choices[int(rng.integers(len(grid_choices)))]
            grids.append(g)
            row += [IMG] * (g[0] * g[1] * g[2] // MERGE**2) + list(rng.integers(10, 50, rng.integers(0, 4)))
        rows.append(row)
    seq = max(len(r) for r in rows) + 2
    ids = np.zeros((len(rows), seq), np.int64)
    mask = np.zeros_like(ids, dtype=bool)
    for b, row in enumerate(rows):
        at = 0 if pad == "right" else seq - len(row)
        ids[b, at : at + len(row)] = row
        mask[b, at : at + len(row)] = True
    return ids, mask, np.array(grids, np.int64).reshape(-1, 3)


def config() -> ModelConfig:
    cfg = ModelConfig.__new__(ModelConfig)  # only the two fields rope reads
    object.__setattr__(cfg, "image_token_id", IMG)
    object.__setattr__(cfg, "vision", type("V", (), {"spatial_merge_size": MERGE})())
    return cfg


def host(x):
    return x.cpu().numpy() if hasattr(x, "cpu") else x


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pad", ["right", "left"])
def test_mrope_matches_models_rope(device, seed, pad):
    ids, mask, grids = prompt_batch(seed, pad)
    want_pos, want_delta = reference_positions(ids, grids, config(), mask)
    got_pos, got_delta = mrope_position_ids(ids, grids, IMG, MERGE, mask, device=device)
    np.testing.assert_array_equal(host(got_pos), want_pos)  # padding slots included: 0
    np.testing.assert_array_equal(got_delta, want_delta)


def test_mrope_text_split_by_padding_continues(device):
    ids = np.array([[11, 12, 0, 13, IMG, IMG, IMG, IMG, 14]])
    mask = np.array([[1, 1, 0, 1, 1, 1, 1, 1, 1]], bool)
    want, delta = reference_positions(ids, np.array([[1, 4, 4]]), config(), mask)
    got, got_delta = mrope_position_ids(ids, np.array([[1, 4, 4]]), IMG, MERGE, mask, device=device)
    np.testing.assert_array_equal(host(got), want)
    np.testing.assert_array_equal(got_delta, delta)


def test_mrope_rejects_bad_prompts_by_name():
    ids = np.array([[1, IMG, IMG, IMG, 2]])
    with pytest.raises(KernelArgumentError, match="needs 4 consecutive image tokens"):
        mrope_position_ids(ids, np.array([[1, 4, 4]]), IMG, MERGE)
    with pytest.raises(KernelArgumentError, match="divisible by 2"):
        mrope_position_ids(ids, np.array([[1, 3, 4]]), IMG, MERGE)
    with pytest.raises(KernelArgumentError, match="2 image grids given"):
        mrope_position_ids(np.array([[1, IMG, 2]]), np.array([[1, 2, 2], [1, 2, 2]]), IMG, MERGE)
    with pytest.raises(KernelArgumentError, match="padding inside image"):
        mrope_position_ids(np.array([[IMG, IMG, 0, IMG, IMG]]), np.array([[1, 4, 4]]), IMG, MERGE,
                           np.array([[1, 1, 0, 1, 1]]))
    with pytest.raises(KernelArgumentError, match="attention_mask shape"):
        mrope_position_ids(ids, None, IMG, MERGE, np.ones((2, 5)))


def make(values: np.ndarray, dtype: str, device: str):
    if dtype != "bfloat16" and device != "cuda":
        return np.ascontiguousarray(values.astype(dtype))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.cuda() if device == "cuda" else t


def bits(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.view(np.uint16 if x.itemsize == 2 else np.uint32)
    import torch

    x = x.detach().cpu()
    return (x.view(torch.int16) if x.element_size() == 2 else x.view(torch.int32)).numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("hidden", [64, 80, 33])
def test_embed_merge_matches_take_and_fill(device, dtype, hidden):
    ids, mask, grids = prompt_batch(4, "right")
    rng = np.random.default_rng(1)
    table = rng.standard_normal((60, hidden)).astype(np.float32)
    counts = [int(g[0] * g[1] * g[2]) // MERGE**2 for g in grids]
    blocks = [rng.standard_normal((n, hidden)).astype(np.float32) for n in counts]
    got = embed_merge(make(table, dtype, device), ids, [make(b, dtype, device) for b in blocks], IMG, device=device)
    want = bits(make(table, dtype, "cpu"))[ids]
    if blocks:
        want[ids == IMG] = bits(make(np.concatenate(blocks), dtype, "cpu"))
    assert (ids == IMG).sum() == sum(counts) > 0
    np.testing.assert_array_equal(bits(got), want)


def test_embed_merge_rejects_bad_arguments_by_name():
    table = np.zeros((20, 8), np.float32)
    ids = np.array([[1, IMG, IMG, 2]])
    two = np.zeros((2, 8), np.float32)
    embed_merge(table, ids, [two], IMG)
    with pytest.raises(KernelArgumentError, match="2 image-pad tokens but 3 image embedding rows"):
        embed_merge(table, ids, [np.zeros((3, 8), np.float32)], IMG)
    with pytest.raises(KernelArgumentError, match="image_embeds\\[0\\] must be \\[n, 8\\]"):
        embed_merge(table, ids, [np.zeros((2, 9), np.float32)], IMG)
    with pytest.raises(KernelArgumentError, match="image_embeds\\[0\\] is float16"):
        embed_merge(table, ids, [two.astype(np.float16)], IMG)
    with pytest.raises(KernelArgumentError, match="image_embeds\\[0\\] must be C-contiguous"):
        embed_merge(table, ids, [np.zeros((8, 2), np.float32).T], IMG)
    with pytest.raises(KernelArgumentError, match="table must be C-contiguous"):
        embed_merge(np.zeros((8, 20), np.float32).T, ids, [two], IMG)
    with pytest.raises(KernelArgumentError, match="input_ids must lie in"):
        embed_merge(table, np.array([[25]]), [], IMG)
