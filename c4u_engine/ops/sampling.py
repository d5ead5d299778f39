"""Batched sampling: the Python face of _C.sample_cpu / _C.sample_cuda and _C_emulated.sample (the CUDA source under
the SIMT emulator). Rules (argmax at temperature 0, top-k, top-p, banned first tokens, Gumbel-max with Philox
noise) and their exactness: csrc/include/c4u/sampling.h. The same seed and offsets give the same tokens on every
device, bit for bit by construction (the float math is IEEE basic operations rounded once each: no libm, no fused
multiply-add; csrc/include/c4u/sampling_math.h).

Logits are float32 [batch, vocab]: numpy on "cpu" / "emulated", a torch CUDA tensor on "cuda". Per-row settings
are host values (numbers or numpy arrays of length batch), checked here; bad ones raise KernelArgumentError naming
the argument.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import KERNEL_DEVICES, require

__all__ = ["sample"]

_SUFFIX = {"cpu": "_cpu", "cuda": "_cuda", "emulated": ""}


def _per_row(op: str, name: str, value: Any, batch: int, dtype) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(batch, arr)
    if arr.shape != (batch,):
        raise KernelArgumentError(f"{op}: {name} must be a number or [batch={batch}] values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr.astype(np.float64))):
        raise KernelArgumentError(f"{op}: {name} must be finite, got {arr.tolist()}")
    return np.ascontiguousarray(arr.astype(dtype))


def sample(logits, *, temperature: Any = 0.0, top_k: Any = 0, top_p: Any = 1.0, seed: int = 0,
           offsets: Any = 0, banned: Sequence[int] = (), ban_rows: Any = False, device: str | None = None):
    """Token ids int32 [batch] (numpy on host devices, a torch tensor on "cuda").

    temperature >= 0 per row (0 = argmax, lowest id on ties); top_k >= 0 (0 = no cut); top_p in (0, 1];
    seed: uint64; offsets: uint64 per row (the Philox counter: e.g. a request's draw count), so rows and steps
    draw independent noise; banned: token ids excluded in the rows where ban_rows is true (e.g. first tokens).
    """
    op = "sampling.sample"
    on_cuda = type(logits).__module__.startswith("torch")
    if on_cuda:
        shape, dtype, dev = tuple(logits.shape), str(logits.dtype).removeprefix("torch."), logits.device.type
        contiguous = bool(logits.is_contiguous())
    elif isinstance(logits, np.ndarray):
        shape, dtype, dev, contiguous = logits.shape, str(logits.dtype), "cpu", logits.flags.c_contiguous
    else:
        raise KernelArgumentError(f"{op}: logits must be a numpy array or a torch tensor, got {type(logits).__name__}")
    device = device or dev
    if device not in KERNEL_DEVICES:
        raise KernelArgumentError(f"{op}: device must be one of {KERNEL_DEVICES}, got {device!r}")
    if (device == "cuda") != (on_cuda and dev == "cuda") or (on_cuda and dev != "cuda"):
        raise KernelArgumentError(f"{op}: device {device!r} needs logits as a "
                                  f"{'torch CUDA tensor' if device == 'cuda' else 'numpy array'}")
    if len(shape) != 2 or shape[1] < 1:
        raise KernelArgumentError(f"{op}: logits must be [batch, vocab] with vocab >= 1, got {shape}")
    if dtype != "float32":
        raise KernelArgumentError(f"{op}: logits must be float32, got {dtype}")
    if not contiguous:
        raise KernelArgumentError(f"{op}: logits must be C-contiguous (use np.ascontiguousarray / .contiguous())")
    batch, vocab = int(shape[0]), int(shape[1])
    temps = _per_row(op, "temperature", temperature, batch, np.float32)
    ks = _per_row(op, "top_k", top_k, batch, np.int64)
    ps = _per_row(op, "top_p", top_p, batch, np.float32)
    if (temps < 0).any():
        raise KernelArgumentError(f"{op}: temperature must be >= 0, got {temps.tolist()}")
    if (ks < 0).any() or (ks > np.iinfo(np.int32).max).any():
        raise KernelArgumentError(f"{op}: top_k must be >= 0, got {ks.tolist()}")
    if ((ps <= 0) | (ps > 1)).any():
        raise KernelArgumentError(f"{op}: top_p must be in (0, 1], got {ps.tolist()}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise KernelArgumentError(f"{op}: seed must be an int in [0, 2**64), got {seed!r}")
    offs = np.asarray(offsets)
    if offs.ndim == 0:
        offs = np.full(batch, offs)
    if offs.shape != (batch,) or not np.issubdtype(offs.dtype, np.integer) or (offs < 0).any():
        raise KernelArgumentError(f"{op}: offsets must be a non-negative int or [batch={batch}] ints")
    offs = np.ascontiguousarray(offs.astype(np.uint64))
    ban_ids = np.ascontiguousarray(np.asarray(list(banned), dtype=np.int64))
    if ban_ids.size and (ban_ids.min() < 0 or ban_ids.max() >= vocab):
        raise KernelArgumentError(f"{op}: banned ids must be in [0, {vocab}), got {ban_ids.tolist()}")
    ban = _per_row(op, "ban_rows", ban_rows, batch, np.int32)
    if ban.any() and np.unique(ban_ids).size >= vocab:
        raise KernelArgumentError(f"{op}: banned excludes every token of the vocabulary")
    ban_ids = ban_ids.astype(np.int32)
    if not on_cuda and batch:
        _check_logits(op, logits, ban, ban_ids)
    mod = require(op, device)
    host = [temps, ks.astype(np.int32), ps, offs, ban, ban_ids if ban_ids.size else np.zeros(1, np.int32)]
    if device == "cuda":
        import torch

        dev_arrays = [torch.from_numpy(a).to(logits.device) for a in host]
        ptrs = [t.data_ptr() for t in dev_arrays]
        out = torch.empty(batch, dtype=torch.int32, device=logits.device)
        out_ptr, data_ptr = out.data_ptr(), logits.data_ptr()
        stream = int(torch.cuda.current_stream(logits.device).cuda_stream)
    else:
        ptrs = [a.ctypes.data for a in host]
        out = np.empty(batch, np.int32)
        out_ptr, data_ptr, stream = out.ctypes.data, logits.ctypes.data, 0
    getattr(mod, "sample" + _SUFFIX[device])(data_ptr, batch, vocab, ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4],
                                             ptrs[5], int(ban_ids.size), int(seed), out_ptr, stream)
    return out


def _check_logits(op: str, logits: np.ndarray, ban: np.ndarray, ban_ids: np.ndarray) -> None:
    """NaN or +inf poison every rule; a row whose allowed logits are all -inf has nothing to draw. One max per row
    (NaN and +inf survive it), plus a copy of the rows with bans only."""
    top = logits.max(axis=1)
    if np.isnan(top).any() or np.isposinf(top).any():
        raise KernelArgumentError(f"{op}: logits hold NaN or +inf")
    dead = np.isneginf(top)
    banned_rows = np.flatnonzero(ban)
    if ban_ids.size and banned_rows.size:
        allowed = logits[banned_rows]
        allowed[:, ban_ids] = -np.inf
        dead[banned_rows] |= np.isneginf(allowed.max(axis=1))
    if dead.any():
        raise KernelArgumentError(f"{op}: rows {np.flatnonzero(dead).tolist()} have no finite allowed logit")
