"""ops.cascade_attention against an fp32 (float64) reference that gathers each row's positions and runs plain
softmax attention: the CPU twin, the CUDA source under the SIMT emulator (every schedule), and the real CUDA build
(marked `cuda`). Awkward shapes: one KV head, GQA 7:1 and 2:1, head_dim 64/80/128, odd block sizes, shared and own
lengths straddling block and tile (32) edges, empty shared parts, empty own parts, rows with no position, groups
with more queries than a block takes (16). Pools start as NaN-sprinkled sentinels: a slot read that should not be
turns the output NaN."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops import cascade_attention
from tests.ops.test_paged_kv import make, sentinel

EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def to_f32(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float32)
    return x.detach().float().cpu().numpy()


def build_case(kv_heads, ratio, head_dim, block_size, groups, seed=0):
    """groups: [(shared_len, [own_len, ...]), ...]. Returns the metadata and the pools' live content.

    The shared part of a group lives in its own blocks (shared_tables[g]); each row's table repeats the shared
    blocks except the partly filled last one, which it gets as a private copy (a copy-on-write fork), then its own.
    """
    rng = np.random.default_rng(seed)
    rows = sum(len(own) for _, own in groups)
    group_rows = np.zeros(len(groups) + 1, np.int32)
    shared_lens = np.array([s for s, _ in groups], np.int32)
    seq_lens = np.array([s + o for s, own in groups for o in own], np.int32)
    need = lambda n: -(-n // block_size)  # noqa: E731
    max_shared = max([need(s) for s, _ in groups] + [1])
    max_blocks = max([need(int(n)) for n in seq_lens] + [1])
    shared_tables = np.full((len(groups), max_shared), -1, np.int32)
    block_tables = np.full((rows, max_blocks), -1, np.int32)
    next_block = [0]

    def take() -> int:
        next_block[0] += 1
        return next_block[0] - 1

    copies = []  # (src block, dst block, slots): the forks' private copies of a partial last shared block
    r = 0
    for g, (s, own) in enumerate(groups):
        group_rows[g + 1] = group_rows[g] + len(own)
        for i in range(need(s)):
            shared_tables[g, i] = take()
        for o in own:
            full = s // block_size
            block_tables[r, :full] = shared_tables[g, :full]
            for i in range(full, need(s + o)):
                block_tables[r, i] = take()
            if s % block_size:
                copies.append((shared_tables[g, full], block_tables[r, full], s % block_size))
            r += 1
    num_blocks = next_block[0] + 2  # two blocks nobody uses
    pool_shape = (num_blocks, kv_heads, block_size, head_dim)
    pool_k, pool_v = sentinel(pool_shape, seed + 1), sentinel(pool_shape, seed + 2)
    # Live positions get real values: the shared ones in the group's blocks, the own ones in each row's.
    for g, (s, _own) in enumerate(groups):
        for p in range(s):
            b, t = shared_tables[g, p // block_size], p % block_size
            pool_k[b, :, t] = rng.standard_normal((kv_heads, head_dim))
            pool_v[b, :, t] = rng.standard_normal((kv_heads, head_dim))
    for src, dst, n in copies:
        pool_k[dst, :, :n] = pool_k[src, :, :n]
        pool_v[dst, :, :n] = pool_v[src, :, :n]
    for r in range(rows):
        g = int(np.searchsorted(group_rows, r, side="right") - 1)
        for p in range(int(shared_lens[g]), int(seq_lens[r])):
            b, t = block_tables[r, p // block_size], p % block_size
            pool_k[b, :, t] = rng.standard_normal((kv_heads, head_dim))
            pool_v[b, :, t] = rng.standard_normal((kv_heads, head_dim))
    q = rng.standard_normal((rows, kv_heads * ratio, head_dim)).astype(np.float32)
    return dict(q=q, pool_k=pool_k, pool_v=pool_v, group_rows=group_rows, shared_tables=shared_tables,
                shared_lens=shared_lens, block_tables=block_tables, seq_lens=seq_lens)


def reference(q, pool_k, pool_v, group_rows, shared_tables, shared_lens, block_tables, seq_lens, scale):
    """Plain attention in float64 over each row's gathered positions (shared ones through the group's table)."""
    rows, q_heads, head_dim = q.shape
    kv_heads, block_size = pool_k.shape[1], pool_k.shape[2]
    ratio = q_heads // kv_heads
    out = np.zeros(q.shape)
    for r in range(rows):
        g = int(np.searchsorted(group_rows, r, side="right") - 1)
        s = int(shared_lens[g])
        pos = range(int(seq_lens[r]))
        if not len(pos):
            continue
        blocks = [shared_tables[g, p // block_size] if p < s else block_tables[r, p // block_size] for p in pos]
        k = np.stack([pool_k[b, :, p % block_size] for b, p in zip(blocks, pos)], axis=1).astype(np.float64)
        v = np.stack([pool_v[b, :, p % block_size] for b, p in zip(blocks, pos)], axis=1).astype(np.float64)
        for qh in range(q_heads):
            logits = k[qh // ratio] @ q[r, qh].astype(np.float64) * scale
            w = np.exp(logits - logits.max())
            out[r, qh] = (w / w.sum()) @ v[qh // ratio]
    return out


# (kv_heads, ratio, head_dim, block_size, groups [(shared_len, [own lens])])
SHAPES = [
    pytest.param(1, 4, 64, 16, [(33, [1, 17, 0]), (0, [5]), (16, [2, 31])], id="mqa-d64-bs16"),
    pytest.param(1, 7, 128, 5, [(70, [3, 1, 9]), (1, [0])], id="gqa7-d128-bs5-21q"),
    pytest.param(2, 2, 80, 8, [(7, [0, 40]), (0, [0, 3]), (64, [1])], id="gqa2-d80-bs8-empty"),
    pytest.param(2, 1, 64, 16, [(32, [32])], id="mha-tile-edges"),
]
DTYPES = ["float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv_heads,ratio,head_dim,block_size,groups", SHAPES)
def test_matches_fp32_reference(device, dtype, kv_heads, ratio, head_dim, block_size, groups):
    case = build_case(kv_heads, ratio, head_dim, block_size, groups, seed=head_dim + block_size)
    data = {n: make(case[n], dtype, device) for n in ("q", "pool_k", "pool_v")}
    meta = {n: case[n] for n in ("group_rows", "shared_tables", "shared_lens", "block_tables", "seq_lens")}
    scale = head_dim**-0.5
    out = cascade_attention.decode(data["q"], data["pool_k"], data["pool_v"], **meta, device=device)
    # The reference reads the inputs as the kernel does: rounded to the dtype.
    want = reference(to_f32(data["q"]), to_f32(data["pool_k"]), to_f32(data["pool_v"]), **meta, scale=scale)
    got = to_f32(out)
    # Output rounding (half an ulp of values up to ~3) plus float32 accumulation over up to ~100 positions.
    tol = 4 * EPS[dtype] * max(1.0, float(np.abs(want).max())) + 1e-5
    np.testing.assert_allclose(got, want, atol=tol, rtol=0)
    no_position = case["seq_lens"] == 0
    assert (got[no_position] == 0).all()


def test_same_result_as_plain_rows_whatever_the_grouping(device):
    """Cascade is an evaluation order: one group of three rows equals three one-row groups over the same KV (each
    row's own table then covers the shared prefix too). Within float32 rounding."""
    case = build_case(1, 3, 64, 4, [(45, [2, 0, 7])], seed=7)
    base = {n: case[n] for n in ("q", "pool_k", "pool_v", "block_tables", "seq_lens")}
    grouped = cascade_attention.decode(**base, group_rows=case["group_rows"], shared_tables=case["shared_tables"],
                                       shared_lens=case["shared_lens"], device=device)
    flat = cascade_attention.decode(**base, group_rows=np.arange(4, dtype=np.int32),
                                    shared_tables=np.zeros((3, 1), np.int32), shared_lens=np.zeros(3, np.int32),
                                    device=device)
    np.testing.assert_allclose(grouped, flat, atol=2e-6, rtol=0)


def _args():
    case = build_case(2, 2, 64, 8, [(9, [1, 2])], seed=3)
    return {n: case[n] for n in ("q", "pool_k", "pool_v", "group_rows", "shared_tables", "shared_lens",
                                 "block_tables", "seq_lens")}


@pytest.mark.parametrize("name,bad,message", [
    ("q", np.zeros((2, 3, 64), np.float32), "multiple of kv_heads"),
    ("q", np.zeros((2, 4, 32), np.float32), "q must be"),
    ("q", np.zeros((2, 4, 64), np.float16), "q is float16"),
    ("group_rows", np.array([0, 1], np.int32), "group_rows must run"),
    ("group_rows", np.array([0, 2], np.int64), "group_rows must be int32"),
    ("shared_lens", np.array([-1], np.int32), "shared_lens must be >= 0"),
    ("seq_lens", np.array([9, 8], np.int32), "seq_lens[1] = 8 is below"),
    ("block_tables", np.array([[0, 1], [0, 99]], np.int32), "block_tables names a block outside"),
    ("block_tables", np.array([[0], [0]], np.int32), "row 0 needs 2 blocks"),
    ("shared_tables", np.array([[0, 99]], np.int32), "shared_tables"),
    ("out", np.zeros((2, 4, 64), np.float16), "out is float16"),
])
def test_bad_arguments_are_named(name, bad, message):
    args = _args()
    args[name] = bad
    with pytest.raises(KernelArgumentError, match=message.replace("[", r"\[")):
        cascade_attention.decode(**args, device="cpu")


def test_non_contiguous_q_rejected():
    args = _args()
    args["q"] = np.asfortranarray(args["q"])
    with pytest.raises(KernelArgumentError, match="q must be C-contiguous"):
        cascade_attention.decode(**args, device="cpu")


def test_head_dim_over_128_rejected():
    pool = np.zeros((1, 1, 4, 160), np.float32)
    with pytest.raises(KernelArgumentError, match="head_dim 160 exceeds 128"):
        cascade_attention.decode(np.zeros((1, 1, 160), np.float32), pool, pool.copy(), np.array([0, 1], np.int32),
                                 np.zeros((1, 1), np.int32), np.zeros(1, np.int32), np.zeros((1, 1), np.int32),
                                 np.zeros(1, np.int32), device="cpu")


# Split-KV of the shared part: long and short shared parts, a split count that leaves empty splits (7 splits of a
# 45-slot part: whole tiles of 32, so only the first two hold positions), an empty shared part, GQA.
SPLIT_GROUPS = [(300, [1, 9, 0]), (45, [3]), (0, [2]), (97, [40, 1])]


@pytest.mark.parametrize("splits", [1, 2, 3, 7])
def test_shared_splits_match_fp32_reference(device, splits):
    case = build_case(2, 3, 64, 16, SPLIT_GROUPS, seed=splits)
    meta = {n: case[n] for n in ("group_rows", "shared_tables", "shared_lens", "block_tables", "seq_lens")}
    data = {n: make(case[n], "float32", device) for n in ("q", "pool_k", "pool_v")}
    out = to_f32(cascade_attention.decode(data["q"], data["pool_k"], data["pool_v"], **meta, device=device,
                                          shared_splits=splits))
    want = reference(case["q"], case["pool_k"], case["pool_v"], **meta, scale=64**-0.5)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)
    assert (out[case["seq_lens"] == 0] == 0).all()


def test_split_count_fills_the_gpu_but_keeps_splits_long():
    # 8 groups x 4 KV heads x 1 query chunk = 32 blocks; 132 SMs want 264 blocks: 9 splits, if the part is long enough
    assert cascade_attention.split_count(8, 4, 16, 2000, 132) == 9
    assert cascade_attention.split_count(8, 4, 16, 600, 132) == 600 // 128  # at least 4 tiles per split
    assert cascade_attention.split_count(64, 4, 112, 2000, 132) == 1  # the groups alone fill the GPU
    assert cascade_attention.split_count(8, 4, 16, 2000, 0) == 1  # host devices: one pass
    assert cascade_attention.split_count(8, 4, 16, 100, 132) == 1


@pytest.mark.parametrize("bad", [0, 65, 2.0, True])
def test_bad_shared_splits_named(bad):
    with pytest.raises(KernelArgumentError, match="shared_splits must be an int in"):
        cascade_attention.decode(**_args(), device="cpu", shared_splits=bad)
