"""Which native implementation can run here, and why not (xformers style).

Each implementation answers `why_not()` with None when it can run, or a sentence saying what is missing. Ops call
`require(op, device)` before touching native code, so the CPU path and the GPU path are the same call and a
missing piece is a BackendUnavailableError that says why. Nothing here touches a GPU at import time.
"""

from __future__ import annotations

from types import ModuleType

from c4u_engine.errors import BackendUnavailableError, KernelArgumentError

DEVICES = ("cpu", "cuda")
# Kernels with a CUDA source also run under the SIMT emulator (c4u_engine._C_emulated): tests and debugging only.
KERNEL_DEVICES = ("cpu", "cuda", "emulated")


def native() -> ModuleType:
    """The compiled module c4u_engine._C, or BackendUnavailableError when it is not built or not importable."""
    try:
        from c4u_engine import _C
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the native core c4u_engine._C is not importable ({exc}); reinstall with `pip install -e .`"
        ) from exc
    return _C


def cpu_why_not() -> str | None:
    """None when the CPU kernels can run, else the reason."""
    try:
        native()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def cuda_why_not() -> str | None:
    """None when the CUDA kernels can run (CUDA build, a visible device, torch with CUDA), else the reason.

    Queries the CUDA driver, so call it at run time, never at test collection or import.
    """
    reason = cpu_why_not()
    if reason is not None:
        return reason
    _C = native()
    if not _C.with_cuda:
        return "c4u_engine._C was built without CUDA (no nvcc at build time, or C4U_CUDA=OFF)"
    if _C.cuda_device_count() == 0:
        return "no CUDA device is visible to c4u_engine._C (no GPU or no driver)"
    try:
        import torch
    except ImportError:
        return "the CUDA path takes torch tensors and torch is not installed (pip install torch==2.13.0)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} cannot use CUDA here (CPU-only build or no driver)"
    return None


def emulated_module() -> ModuleType:
    """c4u_engine._C_emulated (CUDA kernel sources under the SIMT emulator), or BackendUnavailableError."""
    try:
        from c4u_engine import _C_emulated
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the emulated kernels c4u_engine._C_emulated are not importable ({exc}); they are built on Linux "
            "(C4U_SIMT_EMULATION=AUTO) by `pip install -e .`"
        ) from exc
    return _C_emulated


def emulated_why_not() -> str | None:
    """None when the CUDA kernel sources can run under the SIMT emulator here, else the reason."""
    try:
        emulated_module()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


_WHY_NOT = {"cpu": cpu_why_not, "cuda": cuda_why_not, "emulated": emulated_why_not}


def require(op: str, device: str) -> ModuleType:
    """The native module, once `op` can run on `device` (c4u_engine._C_emulated for "emulated");
    KernelArgumentError for an unknown device, BackendUnavailableError (with the reason) when it cannot run here."""
    if device not in _WHY_NOT:
        raise KernelArgumentError(f"{op}: device must be one of {KERNEL_DEVICES}, got {device!r}")
    reason = _WHY_NOT[device]()
    if reason is not None:
        raise BackendUnavailableError(f"{op} on {device} cannot run here: {reason}")
    return emulated_module() if device == "emulated" else native()
