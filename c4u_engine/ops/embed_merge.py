"""Token embeddings with image embeddings merged in: the Python face of _C.embed_merge_cpu / _cuda and
_C_emulated.embed_merge. Equals the runners' embed (take rows of the table, then fill the image-pad tokens in
row-major order with the images' embeddings, as masked_scatter does) for a whole batch in one call. Contract:
csrc/include/c4u/embed_merge.h. Token ids are host numpy (where the engine keeps them); the table and the image
embeddings are numpy on "cpu" / "emulated", torch CUDA tensors on "cuda" (float32, float16, or bfloat16 from torch).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import KERNEL_DEVICES, require

__all__ = ["embed_merge"]

_FLOATS = ("float32", "float16", "bfloat16")
_SUFFIX = {"cpu": "_cpu", "cuda": "_cuda", "emulated": ""}


def _facts(value: Any) -> tuple[tuple[int, ...], str, str, bool, int]:
    if isinstance(value, np.ndarray):
        return value.shape, str(value.dtype), "cpu", value.flags.c_contiguous, value.itemsize
    if type(value).__module__.startswith("torch"):
        return (tuple(value.shape), str(value.dtype).removeprefix("torch."), value.device.type,
                bool(value.is_contiguous()), int(value.element_size()))
    raise KernelArgumentError(f"embed_merge: expected a numpy array or a torch tensor, got {type(value).__name__}")


def _ptr(value: Any) -> int:
    return value.ctypes.data if isinstance(value, np.ndarray) else int(value.data_ptr())


def embed_merge(table, input_ids: np.ndarray, image_embeds: Sequence[Any], image_token_id: int, *,
                device: str | None = None):
    """[B, S, hidden] embeddings: table[input_ids], image-pad tokens (== image_token_id) replaced in row-major order
    by the rows of image_embeds (a list of [n_i, hidden] blocks, concatenated in order)."""
    op = "embed_merge"
    shape, dtype, dev, contiguous, itemsize = _facts(table)
    if len(shape) != 2 or dtype not in _FLOATS:
        raise KernelArgumentError(f"{op}: table must be [vocab, hidden] of {_FLOATS}, got {dtype} {shape}")
    if not contiguous:
        raise KernelArgumentError(f"{op}: table must be C-contiguous")
    device = device or dev
    if device not in KERNEL_DEVICES:
        raise KernelArgumentError(f"{op}: device must be one of {KERNEL_DEVICES}, got {device!r}")
    if (device == "cuda") != (dev == "cuda"):
        raise KernelArgumentError(f"{op}: device {device!r} cannot use a table on {dev}")
    vocab, hidden = shape
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise KernelArgumentError(f"{op}: input_ids must be an integer [B, S] array, got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise KernelArgumentError(f"{op}: input_ids must lie in [0, {vocab}), got {ids.min()}..{ids.max()}")
    is_image = ids == image_token_id
    n_image = int(is_image.sum())
    blocks = list(image_embeds)
    for i, block in enumerate(blocks):
        b_shape, b_dtype, b_dev, b_contiguous, _ = _facts(block)
        if len(b_shape) != 2 or b_shape[1] != hidden:
            raise KernelArgumentError(f"{op}: image_embeds[{i}] must be [n, {hidden}], got {b_shape}")
        if b_dtype != dtype or b_dev != dev:
            raise KernelArgumentError(f"{op}: image_embeds[{i}] is {b_dtype} on {b_dev}, the table {dtype} on {dev}")
        if not b_contiguous:
            raise KernelArgumentError(f"{op}: image_embeds[{i}] must be C-contiguous")
    rows = sum(_facts(b)[0][0] for b in blocks)
    if rows != n_image:
        raise KernelArgumentError(f"{op}: {n_image} image-pad tokens but {rows} image embedding rows")
    index = np.where(is_image, np.cumsum(is_image.ravel()).reshape(ids.shape) - 1, -1).astype(np.int32).ravel()
    flat_ids = np.ascontiguousarray(ids.ravel().astype(np.int32))
    mod = require(op, device)
    if isinstance(table, np.ndarray):
        images = np.concatenate(blocks) if blocks else table[:0]
        out = np.empty((*ids.shape, hidden), dtype=table.dtype)
    else:  # torch: CUDA tensors, or CPU tensors (bfloat16 has no numpy dtype)
        import torch

        images = torch.cat(blocks) if blocks else table[:0]
        out = table.new_empty((*ids.shape, hidden))
    if device == "cuda":
        import torch

        meta = [torch.from_numpy(a).to(table.device) for a in (flat_ids, index)]
        meta_ptrs = [t.data_ptr() for t in meta]
        stream = int(torch.cuda.current_stream(table.device).cuda_stream)
    else:
        meta_ptrs, stream = [flat_ids.ctypes.data, index.ctypes.data], 0
    getattr(mod, "embed_merge" + _SUFFIX[device])(_ptr(table), meta_ptrs[0], meta_ptrs[1], _ptr(images), _ptr(out),
                                                  int(ids.size), hidden, itemsize, stream)
    return out
