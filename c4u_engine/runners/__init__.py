"""Model runtimes behind one contract (base.Runner): torch (reference), onnxruntime, tensorrt."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError
from c4u_engine.runners.base import Runner

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_onnx_export(model_dir: Path) -> bool:
    return (model_dir / "onnx" / "manifest.json").is_file() or (model_dir / "manifest.json").is_file()


def _onnxruntime_cuda_reason(device: str) -> str | None:
    """Why onnxruntime cannot run on a CUDA device here, or None (CPU devices need nothing more)."""
    if not device.startswith("cuda"):
        return None
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
    return None


def available_backends(model_dir: Path, device: str) -> dict[str, str | None]:
    """Each backend with None if it can run here, else the reason it cannot."""
    reasons: dict[str, str | None] = {}
    reasons["torch"] = None if _has("torch") else "torch is not installed"
    if not _has("onnxruntime"):
        reasons["onnxruntime"] = "onnxruntime is not installed"
    elif not _has_onnx_export(model_dir):
        reasons["onnxruntime"] = f"{model_dir} holds no exported ONNX graphs (python -m export {model_dir})"
    else:
        reasons["onnxruntime"] = _onnxruntime_cuda_reason(device)
    reasons["tensorrt"] = _tensorrt_reason(model_dir, device)
    return reasons


def _tensorrt_reason(model_dir: Path, device: str) -> str | None:
    """Why the TensorRT runtime cannot run here, from cheap facts (the runner's constructor checks the rest:
    importability, the GPU, sidecars and digests)."""
    if not _has("tensorrt"):
        return "tensorrt is not installed (NVIDIA TensorRT 10.x Python bindings, e.g. pip install tensorrt-cu12)"
    if not device.startswith("cuda"):
        return "tensorrt runs on CUDA devices only"
    if not _has("torch"):
        return "the tensorrt runtime needs a CUDA build of torch for device buffers"
    from c4u_engine.runners.engine_dir import find_engine_dir
    from c4u_engine.runners.tensorrt_plan import missing_plans_reason

    try:
        engine_dir = find_engine_dir(model_dir)
    except EngineArtifactError:
        return (f"{model_dir} holds no exported engine: python -m export {model_dir} --dtype bfloat16, then "
                f"python -m export.build_tensorrt {model_dir}/onnx")
    return missing_plans_reason(engine_dir)


def create_runner(model_dir: Path, *, backend: str = "auto", device: str = "cpu", dtype: str | None = None) -> Runner:
    """The runner for `backend` on `device`. "auto": on CPU onnxruntime when an exported engine directory exists
    (model_dir/onnx/ or model_dir itself) and can run the asked dtype, else torch; on CUDA tensorrt (when
    tensorrt is installed and the engine directory holds built plans that load on this GPU), onnxruntime, torch
    in that order. BackendUnavailableError says why each candidate could not run."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    reasons = available_backends(Path(model_dir), device)
    if backend == "auto":
        order = ["tensorrt", "onnxruntime", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"]
        for name in order:
            if reasons[name] is None:
                try:
                    return _create(name, model_dir, device, dtype)
                except BackendUnavailableError as exc:  # e.g. an export in another dtype: try the next runtime
                    reasons[name] = str(exc)
                except EngineArtifactError as exc:
                    if name != "tensorrt":
                        raise
                    reasons[name] = str(exc)  # plans built for another GPU or TensorRT: the next runtime can run
        why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        raise BackendUnavailableError(f"no runtime can run {model_dir} on {device}: {why}")
    if reasons[backend] is not None:
        raise BackendUnavailableError(f"backend {backend!r} cannot run here: {reasons[backend]}")
    return _create(backend, model_dir, device, dtype)


def _create(backend: str, model_dir: Path, device: str, dtype: str | None) -> Runner:
    if backend == "torch":
        from c4u_engine.runners.torch_runner import TorchRunner

        return TorchRunner(model_dir, device=device, dtype=dtype)
    if backend == "onnxruntime":
        from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model_dir, device=device, dtype=dtype)
    if backend == "tensorrt":
        from c4u_engine.runners.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(model_dir, device=device, dtype=dtype)
    raise BackendUnavailableError(f"backend {backend!r} is not implemented in this build")
