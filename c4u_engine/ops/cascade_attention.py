"""Shared-prefix (cascade) decode attention over paged KV: the Python face of _C.cascade_attention_* (CPU twin,
CUDA) and _C_emulated.cascade_attention (the CUDA source under the SIMT emulator). Contract:
csrc/include/c4u/cascade_attention.h; kernels: csrc/include/c4u/cascade_attention.cuh.

One decode step: row r's query q[r] attends its seq_lens[r] positions. Rows are grouped, contiguously, by the
[prefix + A] KV they share (group g = rows group_rows[g] .. group_rows[g + 1] - 1): positions [0, shared_lens[g])
are read through the group's table shared_tables[g] once for all its rows, positions [shared_lens[g], seq_lens[r])
through the row's own full table block_tables[r]; the two partial softmax states are merged by log-sum-exp.

Data (q, pools, out) are numpy or torch CPU tensors on "cpu" / "emulated", torch CUDA tensors on "cuda"; float32,
float16 or bfloat16, all the same. Metadata is host numpy int32, checked value by value here (the kernels trust it:
an out-of-range block id would be a stray read), then uploaded for "cuda". Bad arguments raise KernelArgumentError
naming them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import require
from c4u_engine.ops.device_metadata import upload as _upload
from c4u_engine.ops.paged_kv import _SUFFIX, _check_data, _check_tables, _device, _int32, _int32_1d, _pools, \
    _stream

__all__ = ["MAX_HEAD_DIM", "MAX_SHARED_SPLITS", "decode", "split_count"]

MAX_HEAD_DIM = 128  # c4u::cascade::kMaxHeadDim: four dims per lane
MAX_SHARED_SPLITS = 64  # c4u::cascade::kMaxSharedSplits
_TILE, _QUERIES_PER_BLOCK = 32, 16  # c4u::cascade::kTile, kQueriesPerBlock


def split_count(groups: int, kv_heads: int, group_queries: int, max_shared: int, sm_count: int) -> int:
    """Shared-part splits for one launch: enough shared-part blocks for two waves over sm_count multiprocessors, each
    split at least 4 tiles (128 positions: fewer would cost more in the merge than they save); 1 when sm_count is 0
    (host devices) or the groups alone fill the GPU."""
    if sm_count <= 0 or groups == 0 or max_shared <= 0:
        return 1
    blocks = groups * kv_heads * -(-max(group_queries, 1) // _QUERIES_PER_BLOCK)
    want = -(-2 * sm_count // blocks)
    return int(max(1, min(want, max_shared // (4 * _TILE), MAX_SHARED_SPLITS)))


def _sm_count(pool_like: Any) -> int:
    import torch

    return int(torch.cuda.get_device_properties(pool_like.device).multi_processor_count)


def decode(q, pool_k, pool_v, group_rows, shared_tables, shared_lens, block_tables, seq_lens, out=None, *,
           scale: float | None = None, device: str | None = None, shared_splits: int | None = None):
    """out[r, qh] = softmax(q[r, qh] . K_r^T * scale) V_r over row r's seq_lens[r] positions (cascade order).

    q [rows, q_heads, head_dim]; pool_k, pool_v [num_blocks, kv_heads, block_size, head_dim] (q_heads a multiple
    of kv_heads; query head qh reads KV head qh // (q_heads // kv_heads)); group_rows int32 [groups + 1] from 0 to
    rows, non-decreasing; shared_tables int32 [groups, max_shared_blocks]; shared_lens int32 [groups];
    block_tables int32 [rows, max_blocks]; seq_lens int32 [rows], each >= its group's shared_lens; out
    [rows, q_heads, head_dim] of q's dtype, allocated when None. scale defaults to 1 / sqrt(head_dim).
    Returns out. A row with no position gets zeros.
    shared_splits: split-KV of the shared part on "cuda" / "emulated" (each group's shared positions cut into that
    many chunks scored by separate blocks, merged with the rest by log-sum-exp; 1 to 64); None picks it on "cuda"
    (split_count: enough blocks to fill the GPU) and 1 elsewhere. The CPU twin always runs one pass.
    """
    op = "cascade_attention.decode"
    k, v = _pools(op, pool_k, pool_v)
    device = _device(op, device, k)
    num_blocks, kv_heads, block_size, head_dim = k.shape
    if head_dim > MAX_HEAD_DIM:
        raise KernelArgumentError(f"{op}: head_dim {head_dim} exceeds {MAX_HEAD_DIM}")
    qd = _check_data(op, "q", q, None, k.dtype)
    if len(qd.shape) != 3 or qd.shape[2] != head_dim:
        raise KernelArgumentError(f"{op}: q must be [rows, q_heads, head_dim={head_dim}], got {qd.shape}")
    if qd.device != k.device:
        raise KernelArgumentError(f"{op}: q is on {qd.device}, the pools on {k.device}")
    rows, q_heads, _ = qd.shape
    if q_heads < 1 or q_heads % kv_heads:
        raise KernelArgumentError(f"{op}: q has {q_heads} heads, not a positive multiple of kv_heads {kv_heads}")
    grp = _int32_1d(op, "group_rows", group_rows)
    groups = grp.shape[0] - 1
    if groups < 0 or grp[0] != 0 or grp[-1] != rows or (np.diff(grp) < 0).any():
        raise KernelArgumentError(f"{op}: group_rows must run non-decreasing from 0 to rows={rows}, got "
                                  f"{grp.tolist()}")
    if not isinstance(shared_tables, np.ndarray) or shared_tables.ndim != 2 or shared_tables.shape[0] != groups:
        raise KernelArgumentError(f"{op}: shared_tables must be a host numpy int32 array [groups={groups}, "
                                  "max_shared_blocks]")
    stab = _int32(op, "shared_tables", shared_tables, shared_tables.shape)
    slen = _int32(op, "shared_lens", shared_lens, (groups,))
    if not isinstance(block_tables, np.ndarray) or block_tables.ndim != 2 or block_tables.shape[0] != rows:
        raise KernelArgumentError(f"{op}: block_tables must be a host numpy int32 array [rows={rows}, max_blocks]")
    tab = _int32(op, "block_tables", block_tables, block_tables.shape)
    lens = _int32(op, "seq_lens", seq_lens, (rows,))
    if groups and slen.min() < 0:
        raise KernelArgumentError(f"{op}: shared_lens must be >= 0, got {slen.tolist()}")
    row_shared = np.repeat(slen, np.diff(grp)) if groups else np.zeros(0, np.int32)
    if rows and (lens < row_shared).any():
        r = int(np.argmax(lens < row_shared))
        raise KernelArgumentError(f"{op}: seq_lens[{r}] = {int(lens[r])} is below its group's shared_lens "
                                  f"{int(row_shared[r])}")
    _check_tables(op.replace("decode", "decode (shared_tables)"), stab, slen.astype(np.int64), num_blocks,
                  block_size)
    _check_own_tables(op, tab, row_shared, lens, num_blocks, block_size)
    if out is None:
        out = _empty_like(q, (rows, q_heads, head_dim))
    od = _check_data(op, "out", out, (rows, q_heads, head_dim), k.dtype)
    if od.device != k.device:
        raise KernelArgumentError(f"{op}: out is on {od.device}, the pools on {k.device}")
    if rows == 0:
        return out
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise KernelArgumentError(f"{op}: scale must be finite, got {scale}")
    max_group_rows = int(np.diff(grp).max(initial=0))
    if shared_splits is None:
        shared_splits = split_count(groups, kv_heads, max_group_rows * (q_heads // kv_heads),
                                    int(slen.max(initial=0)), _sm_count(pool_k) if device == "cuda" else 0)
    if isinstance(shared_splits, bool) or not isinstance(shared_splits, (int, np.integer)) \
            or not 1 <= shared_splits <= MAX_SHARED_SPLITS:
        raise KernelArgumentError(f"{op}: shared_splits must be an int in [1, {MAX_SHARED_SPLITS}], got "
                                  f"{shared_splits!r}")
    workspace = _workspace(device, pool_k, (int(shared_splits) + 1) * rows * q_heads * (head_dim + 2))
    mod = require(op, device)
    ptrs, keep = _upload(device, pool_k, [grp, stab, slen, tab, lens])
    shape = (num_blocks, kv_heads, block_size, head_dim, q_heads, k.itemsize, int(k.dtype == "bfloat16"))
    getattr(mod, "cascade_attention" + _SUFFIX[device])(
        shape, scale, qd.ptr, k.ptr, v.ptr, ptrs[0], groups, ptrs[1], stab.shape[1], ptrs[2], ptrs[3], rows,
        tab.shape[1], ptrs[4], max_group_rows, od.ptr, _ptr(workspace), _stream(device, pool_k), int(shared_splits),
    )
    del keep, workspace  # on "cuda" the caching allocator keeps them alive for queued work on this stream
    return out


def _check_own_tables(op: str, tables: np.ndarray, first: np.ndarray, lens: np.ndarray, num_blocks: int,
                      block_size: int) -> None:
    """The entries each row reads for its own positions [first, lens) are in range (the rest are never read)."""
    need = -(-lens.astype(np.int64) // block_size)
    if need.max(initial=0) > tables.shape[1]:
        r = int(np.argmax(need > tables.shape[1]))
        raise KernelArgumentError(f"{op}: row {r} needs {int(need[r])} blocks, block_tables has {tables.shape[1]}")
    lo = first.astype(np.int64) // block_size
    cols = np.arange(tables.shape[1])
    live = tables[(cols[None, :] >= lo[:, None]) & (cols[None, :] < need[:, None]) & (lens > first)[:, None]]
    if live.size and (live.min() < 0 or live.max() >= num_blocks):
        raise KernelArgumentError(f"{op}: block_tables names a block outside [0, {num_blocks})")


def _empty_like(q: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(q, np.ndarray):
        return np.empty(shape, q.dtype)
    import torch

    return torch.empty(shape, dtype=q.dtype, device=q.device)


def _workspace(device: str, pool_like: Any, n: int) -> Any:
    if device != "cuda":
        return np.empty(max(n, 1), np.float32)
    import torch

    return torch.empty(max(n, 1), dtype=torch.float32, device=pool_like.device)


def _ptr(x: Any) -> int:
    return x.ctypes.data if isinstance(x, np.ndarray) else int(x.data_ptr())
