"""ops.paged_kv against a numpy reference: the CPU twin, the CUDA source under the SIMT emulator (every schedule), and
the real CUDA build (marked `cuda`). Copies must be bit-exact over the whole destination (pools start as a sentinel
pattern, so a stray write fails), over awkward shapes: odd batches, one KV head, head_dim 64/80/128, odd block
sizes, lengths straddling block edges, empty rows."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops import paged_kv

# (kv_heads, head_dim, block_size, seq_lens, append_lens): lengths around block edges, empty rows, odd batches.
SHAPES = [
    pytest.param(1, 64, 16, [0, 15, 16, 17, 33], [1, 0, 5, 16, 31], id="mqa-d64-bs16-b5"),
    pytest.param(2, 80, 5, [4, 0, 10], [1, 11, 0], id="h2-d80-bs5-b3"),
    pytest.param(4, 128, 8, [7], [9], id="h4-d128-bs8-b1"),
    pytest.param(1, 64, 16, [0, 0, 0], [0, 0, 0], id="all-empty"),
]
DTYPES = ["float32", "float16", "bfloat16"]


def make(values: np.ndarray, dtype: str, device: str):
    """values (float32) in dtype on device: numpy for float32/float16 on host, torch otherwise."""
    if dtype != "bfloat16" and device != "cuda":
        return np.ascontiguousarray(values.astype(dtype))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.to("cuda") if device == "cuda" else t


def bits(x) -> np.ndarray:
    """The raw words of x on the host (bit-exact comparisons; NaN sentinels compare equal)."""
    if isinstance(x, np.ndarray):
        return x.view(np.uint16 if x.itemsize == 2 else np.uint32)
    import torch

    x = x.detach().cpu()
    return (x.view(torch.int16) if x.element_size() == 2 else x.view(torch.int32)).numpy()


def sentinel(shape, seed: int) -> np.ndarray:
    """Values no kernel writes by accident: random, with NaNs sprinkled in."""
    v = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 100
    v.reshape(-1)[::7] = np.nan
    return v


def tables_for(lens: np.ndarray, block_size: int, num_blocks: int, seed: int) -> np.ndarray:
    """Distinct random blocks per row, padded with -1 beyond each row's need (never read)."""
    need = -(-lens // block_size)
    width = max(int(need.max(initial=0)), 1)
    ids = np.random.default_rng(seed).permutation(num_blocks)
    tables = np.full((len(lens), width), -1, np.int32)
    at = 0
    for b, n in enumerate(need):
        tables[b, :n] = ids[at : at + n]
        at += n
    return tables


def ref_append(pool, tables, seq_lens, append_lens, src, src_start, block_size):
    out = pool.copy()
    for b in range(len(seq_lens)):
        for t in range(append_lens[b]):
            p = seq_lens[b] + t
            out[tables[b, p // block_size], :, p % block_size] = src[b, :, src_start[b] + t]
    return out


def ref_gather(pool, tables, seq_lens, out_len, block_size):
    batch, heads, dim = len(seq_lens), pool.shape[1], pool.shape[3]
    out = np.zeros((batch, heads, out_len, dim), pool.dtype)
    for b in range(batch):
        for t in range(seq_lens[b]):
            out[b, :, t] = pool[tables[b, t // block_size], :, t % block_size]
    return out


def as_dtype_bits(values: np.ndarray, dtype: str) -> np.ndarray:
    return bits(make(values, dtype, "cpu"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,dim,block_size,seq_lens,append_lens", SHAPES)
def test_append_then_gather_exact(device, dtype, heads, dim, block_size, seq_lens, append_lens):
    seq_lens = np.array(seq_lens, np.int32)
    append_lens = np.array(append_lens, np.int32)
    batch = len(seq_lens)
    end = seq_lens + append_lens
    num_blocks = int((-(-end // block_size)).sum()) + 3  # a few blocks nobody owns: they must stay untouched
    tables = tables_for(end, block_size, num_blocks, seed=batch)
    src_len = int((append_lens + 2).max())
    src_start = (np.arange(batch) % 3).astype(np.int32)  # a row's new tokens need not start at slot 0
    src_start = np.minimum(src_start, src_len - append_lens).astype(np.int32)
    pool_init = sentinel((num_blocks, heads, block_size, dim), 1)
    src_vals = np.random.default_rng(2).standard_normal((batch, heads, src_len, dim)).astype(np.float32)
    pool_k, pool_v = make(pool_init, dtype, device), make(pool_init * 2, dtype, device)
    src_k, src_v = make(src_vals, dtype, device), make(-src_vals, dtype, device)

    paged_kv.append(pool_k, pool_v, tables, seq_lens, append_lens, src_k, src_v, src_start, device=device)

    # The reference runs on the dtype's raw words: a copy is a copy, whatever the dtype.
    want_k = ref_append(as_dtype_bits(pool_init, dtype), tables, seq_lens, append_lens,
                        as_dtype_bits(src_vals, dtype), src_start, block_size)
    want_v = ref_append(as_dtype_bits(pool_init * 2, dtype), tables, seq_lens, append_lens,
                        as_dtype_bits(-src_vals, dtype), src_start, block_size)
    np.testing.assert_array_equal(bits(pool_k), want_k)
    np.testing.assert_array_equal(bits(pool_v), want_v)

    out_len = int(end.max(initial=0)) + 3  # room past the longest row: the padding must come out zero
    out_init = sentinel((batch, heads, out_len, dim), 4)
    out_k, out_v = make(out_init, dtype, device), make(out_init, dtype, device)
    paged_kv.gather(pool_k, pool_v, tables, end.astype(np.int32), out_k, out_v, device=device)
    np.testing.assert_array_equal(bits(out_k), ref_gather(want_k, tables, end, out_len, block_size))
    np.testing.assert_array_equal(bits(out_v), ref_gather(want_v, tables, end, out_len, block_size))


def test_fork_copies_only_the_partial_last_block(device):
    """A comparison row forks [prefix + A] (21 tokens, blocks of 16): it shares the full block, gets a copy of the
    partly filled one, appends B; the parent reads back unchanged."""
    heads, dim, bs, num_blocks = 2, 64, 16, 6
    rng = np.random.default_rng(5)
    pool_init = sentinel((num_blocks, heads, bs, dim), 6)
    pool_k, pool_v = make(pool_init, "float32", device), make(pool_init + 1, "float32", device)
    parent = np.array([[4, 1]], np.int32)
    prefix = rng.standard_normal((1, heads, 21, dim)).astype(np.float32)
    paged_kv.append(pool_k, pool_v, parent, np.array([0], np.int32), np.array([21], np.int32),
                    make(prefix, "float32", device), make(-prefix, "float32", device), device=device)
    before = bits(pool_k).copy()

    paged_kv.copy_blocks(pool_k, pool_v, np.array([1], np.int32), np.array([3], np.int32), np.array([5], np.int32),
                         device=device)
    after_copy = bits(pool_k)
    np.testing.assert_array_equal(after_copy[3, :, :5], before[1, :, :5])
    np.testing.assert_array_equal(np.delete(after_copy, 3, axis=0), np.delete(before, 3, axis=0))
    np.testing.assert_array_equal(after_copy[3, :, 5:], before[3, :, 5:])  # slots past n_slots untouched

    child = np.array([[4, 3, 0]], np.int32)
    b_tokens = rng.standard_normal((1, heads, 20, dim)).astype(np.float32)
    paged_kv.append(pool_k, pool_v, child, np.array([21], np.int32), np.array([20], np.int32),
                    make(b_tokens, "float32", device), make(-b_tokens, "float32", device), device=device)

    out = make(np.zeros((2, heads, 41, dim), np.float32), "float32", device)
    out_v = make(np.zeros((2, heads, 41, dim), np.float32), "float32", device)
    both = np.array([[4, 1, 0], [4, 3, 0]], np.int32)
    paged_kv.gather(pool_k, pool_v, both, np.array([21, 41], np.int32), out, out_v, device=device)
    got = bits(out).view(np.float32)
    np.testing.assert_array_equal(got[0, :, :21], prefix[0])
    np.testing.assert_array_equal(got[0, :, 21:], 0)
    np.testing.assert_array_equal(got[1], np.concatenate([prefix[0], b_tokens[0]], axis=1))
    np.testing.assert_array_equal(bits(out_v).view(np.float32)[1, :, :21], -prefix[0])


def test_empty_batches_are_no_ops(device):
    pool = np.full((2, 1, 4, 64), 7.0, np.float32)
    none = np.zeros((0, 1), np.int32)
    paged_kv.append(pool, pool.copy(), none, np.zeros(0, np.int32), np.zeros(0, np.int32),
                    np.zeros((0, 1, 3, 64), np.float32), np.zeros((0, 1, 3, 64), np.float32), device=device)
    paged_kv.copy_blocks(pool, pool.copy(), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32),
                         device=device)
    out = np.zeros((0, 1, 5, 64), np.float32)
    paged_kv.gather(pool, pool.copy(), none, np.zeros(0, np.int32), out, out.copy(), device=device)
    assert (pool == 7.0).all()


def _append_args():
    pool = np.zeros((4, 2, 8, 64), np.float32)
    src = np.ones((2, 2, 5, 64), np.float32)
    return dict(pool_k=pool, pool_v=pool.copy(), block_tables=np.array([[0, 1], [2, 3]], np.int32),
                seq_lens=np.array([5, 0], np.int32), append_lens=np.array([5, 2], np.int32), src_k=src,
                src_v=src.copy())


BAD_APPEND = [
    ("src_k", lambda a: np.asfortranarray(a["src_k"]), "src_k must be C-contiguous"),
    ("src_v", lambda a: a["src_v"][:, :, ::-1], "src_v must be C-contiguous"),
    ("pool_k", lambda a: a["pool_k"].transpose(0, 2, 1, 3), "pool_k must be C-contiguous"),
    ("pool_v", lambda a: a["pool_v"].astype(np.float16), "pool_v is float16, the pool is float32"),
    ("src_k", lambda a: a["src_k"][:, :1].copy(), "src_k must be .batch=2, kv_heads=2"),
    ("src_k", lambda a: a["src_k"].astype(np.int64), "src_k must be one of"),
    ("block_tables", lambda a: a["block_tables"].astype(np.int64), "block_tables must be int32"),
    ("block_tables", lambda a: np.array([[0, 1], [9, 3]], np.int32), "outside \\[0, 4\\)"),
    ("block_tables", lambda a: np.array([[0, 1], [1, 3]], np.int32), "rows 0 and 1 both append into block 1"),
    ("block_tables", lambda a: np.array([[0], [2]], np.int32), "row 0 needs 2 blocks"),
    ("seq_lens", lambda a: np.array([3, -1], np.int32), "seq_lens must be >= 0"),
    ("append_lens", lambda a: np.array([5], np.int32), "append_lens must have shape \\(2,\\)"),
    ("append_lens", lambda a: np.array([6, 2], np.int32), "exceeds src_len 5"),
    ("pool_k", lambda a: [1, 2], "pool_k must be a numpy array or a torch tensor"),
]


@pytest.mark.parametrize("name,bad,message", BAD_APPEND)
def test_append_rejects_bad_arguments_by_name(name, bad, message):
    args = _append_args()
    paged_kv.append(**args)  # the good arguments work
    args[name] = bad(args)
    with pytest.raises(KernelArgumentError, match=message):
        paged_kv.append(**args)


def test_gather_and_copy_reject_bad_arguments_by_name():
    pool = np.zeros((4, 2, 8, 64), np.float32)
    tables = np.array([[0, 1]], np.int32)
    out = np.zeros((1, 2, 10, 64), np.float32)
    with pytest.raises(KernelArgumentError, match="out_k must be C-contiguous"):
        transposed = np.zeros((1, 2, 64, 10), np.float32).transpose(0, 1, 3, 2)
        paged_kv.gather(pool, pool, tables, np.array([9], np.int32), transposed, out)
    with pytest.raises(KernelArgumentError, match="exceed out_len 10"):
        paged_kv.gather(pool, pool, tables, np.array([11], np.int32), out, out.copy())
    with pytest.raises(KernelArgumentError, match="out_v must have shape"):
        paged_kv.gather(pool, pool, tables, np.array([9], np.int32), out, out[:, :, :5].copy())
    ids = np.array([0], np.int32)
    with pytest.raises(KernelArgumentError, match="disjoint"):
        paged_kv.copy_blocks(pool, pool.copy(), ids, ids, np.array([3], np.int32))
    with pytest.raises(KernelArgumentError, match="n_slots must be in"):
        paged_kv.copy_blocks(pool, pool.copy(), ids, ids + 1, np.array([9], np.int32))
    with pytest.raises(KernelArgumentError, match="device must be one of"):
        paged_kv.gather(pool, pool, tables, np.array([9], np.int32), out, out.copy(), device="tpu")
    with pytest.raises(KernelArgumentError, match="needs cuda data"):
        paged_kv.gather(pool, pool, tables, np.array([9], np.int32), out, out.copy(), device="cuda")
