"""The small int32 metadata arrays the kernels read (block tables, lengths, groups), on the kernel's device.

Host metadata reaches a CUDA kernel through a device copy; from pageable memory each copy waits for the stream's
earlier work, so a decode step that uploaded its tables once per layer and kernel (28 layers x 2 kernels x ~5
arrays for a 7B model) would stall the GPU ~250 times. Inside `reuse_uploads()` an array is uploaded once and its
device copy reused by every later call with the same content (the kernels only read metadata).
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("c4u_metadata_uploads", default=None)


@contextmanager
def reuse_uploads() -> Iterator[None]:
    """Within it, metadata of equal content is uploaded to each device once (e.g. one decode step over all layers).
    The device copies are freed on exit, after the kernels that read them were queued on the same stream."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def upload(device: str, pool_like: Any, arrays: list[np.ndarray]) -> tuple[list[int], list[Any]]:
    """Addresses of the metadata arrays on the kernel's device, and the device copies to keep alive until the
    kernel is queued ("cuda"; host kernels read the numpy arrays in place)."""
    if device != "cuda":
        return [a.ctypes.data for a in arrays], []
    import torch

    cache = _CACHE.get()
    on_device = []
    for a in arrays:
        key = (str(pool_like.device), a.dtype.str, a.shape, a.tobytes()) if cache is not None else None
        t = cache.get(key) if cache is not None else None
        if t is None:
            t = torch.from_numpy(np.ascontiguousarray(a)).to(pool_like.device)
            if cache is not None:
                cache[key] = t
        on_device.append(t)
    return [t.data_ptr() for t in on_device], on_device
