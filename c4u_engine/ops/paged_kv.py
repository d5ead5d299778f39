"""Paged KV: the Python face of _C.paged_kv_* (CPU twin, CUDA) and _C_emulated.paged_kv_* (the CUDA source under the
SIMT emulator). Contracts and layout: csrc/include/c4u/paged_kv.h; kernels: csrc/include/c4u/paged_kv.cuh.

Per layer, pool_k and pool_v are [num_blocks, kv_heads, block_size, head_dim] (float32, float16, or bfloat16 from
torch); a sequence's block table lists its blocks, position p in block table[p // block_size], slot
p % block_size. Data arrays are numpy or torch CPU tensors on "cpu" / "emulated", torch CUDA tensors on "cuda".
The metadata (block tables, lengths, block ids) is always host numpy int32: it is checked here, value by value,
because the kernels trust it (an out-of-range block id would be a stray write), then uploaded for "cuda".
Every bad argument raises KernelArgumentError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.device_metadata import upload as _upload
from c4u_engine.ops.dispatch import KERNEL_DEVICES, require

__all__ = ["append", "copy_blocks", "gather"]

_FLOATS = ("float32", "float16", "bfloat16")
_SUFFIX = {"cpu": "_cpu", "cuda": "_cuda", "emulated": ""}


@dataclass
class PagedRow:
    """One decode row's blocks in the pools (engine/paged_kv_store.py builds it, runners/paged_rows.py decodes it)."""

    table: list[int]  # block ids in position order (the entry's shared full blocks, then own blocks)
    shared_blocks: tuple[int, ...]  # the entry's blocks read by the shared pass (its partly filled last one too)
    shared_len: int
    seq_len: int
    held: list[int]  # blocks this row holds a reference on (released once)


@dataclass(frozen=True)
class _Data:
    """What the checks need of a numpy array or torch tensor."""

    ptr: int
    shape: tuple[int, ...]
    dtype: str
    device: str  # "cpu" or "cuda"
    contiguous: bool
    itemsize: int


def _data(op: str, name: str, value: Any) -> _Data:
    if isinstance(value, np.ndarray):
        if not value.flags.writeable and name.startswith(("pool", "out")):
            raise KernelArgumentError(f"{op}: {name} is read-only")
        return _Data(value.ctypes.data, tuple(value.shape), str(value.dtype), "cpu", value.flags.c_contiguous,
                     value.itemsize)
    if type(value).__module__.startswith("torch") and hasattr(value, "data_ptr"):
        return _Data(int(value.data_ptr()), tuple(value.shape), str(value.dtype).removeprefix("torch."),
                     value.device.type, bool(value.is_contiguous()), int(value.element_size()))
    raise KernelArgumentError(f"{op}: {name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _check_data(op: str, name: str, value: Any, shape: tuple[int, ...] | None, dtype: str | None) -> _Data:
    d = _data(op, name, value)
    if d.dtype not in _FLOATS:
        raise KernelArgumentError(f"{op}: {name} must be one of {_FLOATS}, got {d.dtype}")
    if dtype is not None and d.dtype != dtype:
        raise KernelArgumentError(f"{op}: {name} is {d.dtype}, the pool is {dtype}")
    if shape is not None and d.shape != shape:
        raise KernelArgumentError(f"{op}: {name} must have shape {shape}, got {d.shape}")
    if not d.contiguous:
        raise KernelArgumentError(f"{op}: {name} must be C-contiguous (use np.ascontiguousarray / .contiguous())")
    return d


def _row_pair(op: str, names: tuple[str, str, str], keys: Any, values: Any, pool: _Data, batch: int
              ) -> tuple[_Data, _Data]:
    """Per-row K and V [batch, kv_heads, length, head_dim] matching the pools' heads, head_dim, dtype and device.
    names: the K argument's, the V argument's and the length's names, for the messages."""
    k_name, v_name, length = names
    heads, head_dim = pool.shape[1], pool.shape[3]
    dk = _check_data(op, k_name, keys, None, pool.dtype)
    if len(dk.shape) != 4 or dk.shape[0] != batch or dk.shape[1] != heads or dk.shape[3] != head_dim:
        raise KernelArgumentError(
            f"{op}: {k_name} must be [batch={batch}, kv_heads={heads}, {length}, head_dim={head_dim}], got {dk.shape}"
        )
    dv = _check_data(op, v_name, values, dk.shape, pool.dtype)
    for name, d in ((k_name, dk), (v_name, dv)):
        if d.device != pool.device:
            raise KernelArgumentError(f"{op}: {name} is on {d.device}, the pools on {pool.device}")
    return dk, dv


def _pools(op: str, pool_k: Any, pool_v: Any) -> tuple[_Data, _Data]:
    k = _check_data(op, "pool_k", pool_k, None, None)
    if len(k.shape) != 4:
        raise KernelArgumentError(f"{op}: pool_k must be [num_blocks, kv_heads, block_size, head_dim], got {k.shape}")
    if min(k.shape[1:]) < 1:
        raise KernelArgumentError(f"{op}: pool_k has an empty kv_heads, block_size or head_dim: {k.shape}")
    v = _check_data(op, "pool_v", pool_v, k.shape, k.dtype)
    if v.device != k.device:
        raise KernelArgumentError(f"{op}: pool_v is on {v.device}, pool_k on {k.device}")
    return k, v


def _int32(op: str, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise KernelArgumentError(f"{op}: {name} must be a host numpy int32 array, got {type(value).__name__}")
    if value.dtype != np.int32:
        raise KernelArgumentError(f"{op}: {name} must be int32, got {value.dtype}")
    if value.shape != shape:
        raise KernelArgumentError(f"{op}: {name} must have shape {shape}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise KernelArgumentError(f"{op}: {name} must be C-contiguous (use np.ascontiguousarray)")
    return value


def _device(op: str, device: str | None, pool: _Data) -> str:
    if device is None:
        device = pool.device
    if device not in KERNEL_DEVICES:
        raise KernelArgumentError(f"{op}: device must be one of {KERNEL_DEVICES}, got {device!r}")
    want = "cuda" if device == "cuda" else "cpu"
    if pool.device != want:
        raise KernelArgumentError(f"{op}: device {device!r} needs {want} data, pool_k is on {pool.device}")
    return device


def _check_tables(op: str, tables: np.ndarray, lens: np.ndarray, num_blocks: int, block_size: int) -> np.ndarray:
    """Blocks each row uses for its first `lens` positions; those table entries are checked in range."""
    used = -(-lens.astype(np.int64) // block_size)
    if used.max(initial=0) > tables.shape[1]:
        row = int(np.argmax(used > tables.shape[1]))
        raise KernelArgumentError(
            f"{op}: row {row} needs {int(used[row])} blocks, block_tables has {tables.shape[1]} columns"
        )
    cols = np.arange(tables.shape[1])
    live = tables[cols[None, :] < used[:, None]]
    if live.size and (live.min() < 0 or live.max() >= num_blocks):
        raise KernelArgumentError(f"{op}: block_tables names a block outside [0, {num_blocks})")
    return used


def _stream(device: str, pool_like: Any) -> int:
    if device != "cuda":
        return 0
    import torch

    return int(torch.cuda.current_stream(pool_like.device).cuda_stream)


def _layout(k: _Data) -> tuple[int, int, int, int, int]:
    return (*k.shape, k.itemsize)  # type: ignore[return-value]


def append(pool_k, pool_v, block_tables, seq_lens, append_lens, src_k, src_v, src_start=None, *, device=None):
    """Write src_k/src_v[b, :, src_start[b] : src_start[b] + append_lens[b]] at positions seq_lens[b] ... of row b.

    block_tables int32 [batch, max_blocks]; seq_lens, append_lens, src_start int32 [batch] (src_start defaults to 0);
    src_k, src_v [batch, kv_heads, src_len, head_dim] of the pools' dtype. Rows may be empty (append_lens 0). No two
    rows may write into the same block (fork with copy_blocks first: the kernels write rows concurrently).
    """
    op = "paged_kv.append"
    k, v = _pools(op, pool_k, pool_v)
    device = _device(op, device, k)
    num_blocks, _, block_size, _ = k.shape
    tables = _int32_2d(op, block_tables)
    batch, max_blocks = tables.shape
    seq_lens = _int32(op, "seq_lens", seq_lens, (batch,))
    append_lens = _int32(op, "append_lens", append_lens, (batch,))
    src_start = np.zeros(batch, np.int32) if src_start is None else _int32(op, "src_start", src_start, (batch,))
    for name, arr in (("seq_lens", seq_lens), ("append_lens", append_lens), ("src_start", src_start)):
        if batch and arr.min() < 0:
            raise KernelArgumentError(f"{op}: {name} must be >= 0, got {arr.tolist()}")
    sk, sv = _row_pair(op, ("src_k", "src_v", "src_len"), src_k, src_v, k, batch)
    src_len = sk.shape[2]
    if batch and (src_start.astype(np.int64) + append_lens).max() > src_len:
        raise KernelArgumentError(f"{op}: src_start + append_lens exceeds src_len {src_len}")
    end = seq_lens.astype(np.int64) + append_lens
    _check_tables(op, tables, end.astype(np.int64), num_blocks, block_size)
    _check_disjoint_writes(op, tables, seq_lens, append_lens, block_size)
    mod = require(op, device)
    ptrs, keep = _upload(device, pool_k, [tables, seq_lens, append_lens, src_start])
    getattr(mod, "paged_kv_append" + _SUFFIX[device])(
        _layout(k), k.ptr, v.ptr, ptrs[0], batch, max_blocks, ptrs[1], ptrs[2], ptrs[3], sk.ptr, sv.ptr, src_len,
        int(append_lens.max(initial=0)), _stream(device, pool_k),
    )
    del keep


def copy_blocks(pool_k, pool_v, src_blocks, dst_blocks, n_slots, *, device=None):
    """pool[dst_blocks[i], :, :n_slots[i]] = pool[src_blocks[i], :, :n_slots[i]] for K and V (copy-on-write).

    src_blocks, dst_blocks, n_slots int32 [n]; destinations distinct and never a source (the copies run at once).
    """
    op = "paged_kv.copy_blocks"
    k, v = _pools(op, pool_k, pool_v)
    device = _device(op, device, k)
    num_blocks, _, block_size, _ = k.shape
    src = _int32_1d(op, "src_blocks", src_blocks)
    n = src.shape[0]
    dst = _int32(op, "dst_blocks", dst_blocks, (n,))
    slots = _int32(op, "n_slots", n_slots, (n,))
    for name, ids in (("src_blocks", src), ("dst_blocks", dst)):
        if n and (ids.min() < 0 or ids.max() >= num_blocks):
            raise KernelArgumentError(f"{op}: {name} names a block outside [0, {num_blocks})")
    if n and (slots.min() < 0 or slots.max() > block_size):
        raise KernelArgumentError(f"{op}: n_slots must be in [0, {block_size}], got {slots.tolist()}")
    if len(set(dst.tolist())) != n or set(dst.tolist()) & set(src.tolist()):
        raise KernelArgumentError(f"{op}: dst_blocks must be distinct and disjoint from src_blocks")
    mod = require(op, device)
    ptrs, keep = _upload(device, pool_k, [src, dst, slots])
    getattr(mod, "paged_kv_copy_blocks" + _SUFFIX[device])(
        _layout(k), k.ptr, v.ptr, ptrs[0], ptrs[1], ptrs[2], n, _stream(device, pool_k)
    )
    del keep


def gather(pool_k, pool_v, block_tables, seq_lens, out_k, out_v, *, device=None):
    """out[b, :, :seq_lens[b]] = row b's first seq_lens[b] positions; out[b, :, seq_lens[b]:] = 0 (K and V).

    block_tables int32 [batch, max_blocks]; seq_lens int32 [batch]; out_k, out_v [batch, kv_heads, out_len,
    head_dim] of the pools' dtype, written whole (the contiguous `past` the ONNX / TensorRT graphs take).
    """
    op = "paged_kv.gather"
    k, v = _pools(op, pool_k, pool_v)
    device = _device(op, device, k)
    num_blocks, _, block_size, _ = k.shape
    tables = _int32_2d(op, block_tables)
    batch, max_blocks = tables.shape
    seq_lens = _int32(op, "seq_lens", seq_lens, (batch,))
    if batch and seq_lens.min() < 0:
        raise KernelArgumentError(f"{op}: seq_lens must be >= 0, got {seq_lens.tolist()}")
    ok, ov = _row_pair(op, ("out_k", "out_v", "out_len"), out_k, out_v, k, batch)
    out_len = ok.shape[2]
    if batch and seq_lens.max() > out_len:
        raise KernelArgumentError(f"{op}: seq_lens {seq_lens.tolist()} exceed out_len {out_len}")
    _check_tables(op, tables, seq_lens.astype(np.int64), num_blocks, block_size)
    mod = require(op, device)
    ptrs, keep = _upload(device, pool_k, [tables, seq_lens])
    getattr(mod, "paged_kv_gather" + _SUFFIX[device])(
        _layout(k), k.ptr, v.ptr, ptrs[0], batch, max_blocks, ptrs[1], ok.ptr, ov.ptr, out_len,
        _stream(device, pool_k),
    )
    del keep


def _int32_2d(op: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 2:
        raise KernelArgumentError(f"{op}: block_tables must be a host numpy int32 array [batch, max_blocks]")
    return _int32(op, "block_tables", value, value.shape)


def _int32_1d(op: str, name: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise KernelArgumentError(f"{op}: {name} must be a host numpy int32 array [n]")
    return _int32(op, name, value, value.shape)


def _check_disjoint_writes(op: str, tables: np.ndarray, seq_lens: np.ndarray, append_lens: np.ndarray,
                           block_size: int) -> None:
    """No block is written by two rows (rows run concurrently on a GPU: a shared last block must be forked)."""
    written: dict[int, int] = {}
    for b in np.flatnonzero(append_lens):
        first = int(seq_lens[b]) // block_size
        last = (int(seq_lens[b]) + int(append_lens[b]) - 1) // block_size
        blocks = tables[b, first : last + 1].tolist()
        if len(set(blocks)) != len(blocks):
            raise KernelArgumentError(f"{op}: row {int(b)} lists a block twice where it appends")
        for block in blocks:
            if written.setdefault(block, int(b)) != b:
                raise KernelArgumentError(
                    f"{op}: rows {written[block]} and {int(b)} both append into block {block} (fork it first)"
                )
