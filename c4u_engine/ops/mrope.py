"""M-RoPE position ids for a batch: the Python face of _C.mrope_positions_cpu / _cuda and _C_emulated.mrope_positions.
Same arguments and result as c4u_engine.models.rope.mrope_position_ids (the reference it must match); the host walks
the token ids once to cut each row into spans (text runs, image grids; contract: csrc/include/c4u/mrope.h) and the
kernel writes every slot's three positions in one launch.
"""

from __future__ import annotations

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import KERNEL_DEVICES, require

__all__ = ["mrope_position_ids", "spans_of"]

_SUFFIX = {"cpu": "_cpu", "cuda": "_cuda", "emulated": ""}


def spans_of(ids: np.ndarray, mask: np.ndarray, grids: np.ndarray, image_token_id: int, merge: int):
    """(row_spans [B + 1], slot_start, length, pos_start, grid [n, 3], deltas [B]) for the kernel.

    A text run split by padding continues its positions; an image's tokens must be consecutive real slots."""
    starts, lengths, positions, span_grids = [], [], [], []
    row_spans, deltas = [0], []
    next_image = 0
    for b in range(ids.shape[0]):
        real = np.flatnonzero(mask[b])
        row = ids[b, real]
        image_slots = np.flatnonzero(row == image_token_id)
        i, current, top = 0, 0, -1

        def emit(c0: int, n: int, pos: int, grid=(0, 0, 0)) -> None:
            slots = real[c0 : c0 + n]
            cuts = np.flatnonzero(np.diff(slots) != 1) + 1  # padding inside the run: one span per contiguous piece
            if len(cuts) and grid[0]:
                raise KernelArgumentError(f"mrope: padding inside image {next_image}'s tokens (row {b})")
            for piece_start, piece_end in zip([0, *cuts.tolist()], [*cuts.tolist(), n]):
                starts.append(int(slots[piece_start]))
                lengths.append(piece_end - piece_start)
                positions.append(pos + piece_start)
                span_grids.append(grid)

        while i < len(row):
            k = np.searchsorted(image_slots, i)
            j = int(image_slots[k]) if k < len(image_slots) else len(row)
            if j > i:
                emit(i, j - i, current)
                current += j - i
                top = current - 1
            if j == len(row):
                break
            if next_image >= len(grids):
                raise KernelArgumentError(f"mrope: the prompt holds more image tokens than the {len(grids)} grids")
            t, h, w = (int(v) for v in grids[next_image])
            h, w = h // merge, w // merge
            count = t * h * w
            if j + count > len(row) or not (row[j : j + count] == image_token_id).all():
                raise KernelArgumentError(f"mrope: image {next_image} (grid {grids[next_image].tolist()}) needs "
                                          f"{count} consecutive image tokens at position {j}; the prompt has fewer")
            emit(j, count, current, (t, h, w))
            top = max(top, current + max(t, h, w) - 1)
            current += max(h, w)
            i = j + count
            next_image += 1
        row_spans.append(len(starts))
        deltas.append(top + 1 - len(row) if len(row) else 0)
    if next_image != len(grids):
        raise KernelArgumentError(f"mrope: {len(grids)} image grids given but the prompt holds image tokens for "
                                  f"{next_image}")
    grid_arr = np.array(span_grids, np.int32).reshape(-1, 3)
    return (np.array(row_spans, np.int32), np.array(starts, np.int32), np.array(lengths, np.int32),
            np.array(positions, np.int64), grid_arr, np.array(deltas, np.int64))


def mrope_position_ids(input_ids, image_grid_thw, image_token_id: int, spatial_merge_size: int,
                       attention_mask=None, *, device: str = "cpu"):
    """(position_ids int64 [3, B, S], rope_deltas int64 [B]) as models.rope.mrope_position_ids; on "cuda" the
    positions are a torch CUDA tensor (the deltas stay numpy)."""
    op = "mrope"
    if device not in KERNEL_DEVICES:
        raise KernelArgumentError(f"{op}: device must be one of {KERNEL_DEVICES}, got {device!r}")
    ids = np.asarray(input_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise KernelArgumentError(f"{op}: input_ids must be an integer [S] or [B, S] array, got shape {ids.shape}")
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask) != 0
    mask = mask[None] if mask.ndim == 1 else mask
    if mask.shape != ids.shape:
        raise KernelArgumentError(f"{op}: attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    grids = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw, np.int64)
    grids = grids.reshape(-1, 3)
    merge = int(spatial_merge_size)
    if (grids[:, 1:] % merge).any() or (grids <= 0).any():
        raise KernelArgumentError(f"{op}: image grids must be positive with h, w divisible by {merge}, "
                                  f"got {grids.tolist()}")
    row_spans, starts, lengths, pos_start, span_grid, deltas = spans_of(ids, mask, grids, image_token_id, merge)
    batch, seq = ids.shape
    mod = require(op, device)
    host = [row_spans, starts, lengths, pos_start, span_grid]
    host = [a if a.size else np.zeros(1, a.dtype) for a in host]  # a valid address even with no spans
    if device == "cuda":
        import torch

        meta = [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in host]
        out = torch.empty((3, batch, seq), dtype=torch.int64, device="cuda")
        ptrs, out_ptr = [t.data_ptr() for t in meta], out.data_ptr()
        stream = int(torch.cuda.current_stream().cuda_stream)
    else:
        host = [np.ascontiguousarray(a) for a in host]
        out = np.empty((3, batch, seq), np.int64)
        ptrs, out_ptr, stream = [a.ctypes.data for a in host], out.ctypes.data, 0
    getattr(mod, "mrope_positions" + _SUFFIX[device])(*ptrs, out_ptr, batch, seq, stream)
    return out, deltas
