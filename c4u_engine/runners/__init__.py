"""Model runtimes behind one contract (base.Runner): torch (reference), onnxruntime, tensorrt."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError, ModelFormatError
from c4u_engine.runners.base import Runner
from c4u_engine.runners.precision import FLOAT_DTYPES, QUANTIZED, normalize_precision

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_onnx_export(model_dir: Path, precision: str | None) -> bool:
    from c4u_engine.runners.engine_dir import MANIFEST_FILE, engine_subdir

    return (model_dir / engine_subdir(precision) / MANIFEST_FILE).is_file() or (model_dir / MANIFEST_FILE).is_file()


def _export_command(model_dir: Path, flag: str) -> str:
    """How to export the missing engine: the built-in model's go to a user directory (never into the installed
    package), which --model then takes."""
    from c4u_engine.builtin import BUILTIN_DIR

    if model_dir.resolve() == BUILTIN_DIR:
        from c4u_engine.builtin import user_engine_dir

        precision = flag.split()[-1] if flag else "fp32"
        return (f"c4u export builtin{flag} writes one to {user_engine_dir(precision)}; then pass --model "
                f"{user_engine_dir(precision)}")
    return f"c4u export {model_dir}{flag}"


def _onnxruntime_cuda_reason(device: str) -> str | None:
    """Why onnxruntime cannot run on a CUDA device here, or None (CPU devices need nothing more)."""
    if not device.startswith("cuda"):
        return None
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
    return None


def available_backends(model_dir: Path, device: str, precision: str | None = None) -> dict[str, str | None]:
    """Each backend with None if it can run here, else the reason it cannot. precision: a canonical name or None."""
    reasons: dict[str, str | None] = {}
    quantized = precision in QUANTIZED
    if quantized:
        reasons["torch"] = f"the torch runtime runs float precisions ({', '.join(FLOAT_DTYPES)}), not {precision}"
    else:
        reasons["torch"] = None if _has("torch") else "torch is not installed"
    if not _has("onnxruntime"):
        reasons["onnxruntime"] = "onnxruntime is not installed"
    elif not _has_onnx_export(model_dir, precision):
        flag = f" --precision {precision}" if precision and precision != "fp32" else ""
        reasons["onnxruntime"] = (f"{model_dir} holds no exported {precision or 'ONNX'} engine ("
                                  f"{_export_command(model_dir, flag)})")
    else:
        reasons["onnxruntime"] = _onnxruntime_cuda_reason(device)
    if quantized:
        reasons["tensorrt"] = (f"{precision} engines are onnxruntime graphs; TensorRT builds its own precisions "
                               f"(python -m export.build_tensorrt ENGINE_DIR --precision ...)")
    else:
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
        return (f"{model_dir} holds no exported engine: c4u export {model_dir} --dtype bfloat16, then "
                f"python -m export.build_tensorrt {model_dir}/onnx")
    return missing_plans_reason(engine_dir)


def _check_checkpoint_dir(model_dir: Path) -> None:
    """Every runtime reads the checkpoint's config.json: a folder without one is no model, whatever else it holds
    (said first, before any runtime complains about the engines it lacks)."""
    if not model_dir.is_dir():
        raise ModelFormatError(f"model directory {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ModelFormatError(f"{model_dir} is not a checkpoint: no config.json (a model directory holds "
                               f"config.json, the weights and the tokenizer, as the built-in model and c4u export's "
                               f"output do)")


def create_runner(model_dir: Path, *, backend: str = "auto", device: str = "cpu", dtype: str | None = None,
                  precision: str | None = None, intra_op_threads: int | None = None,
                  lone_threads: int | None = None) -> Runner:
    """The runner for `backend` on `device`. precision (fp32 | fp16 | bf16 | int8 | int4, runners/precision.py):
    a float precision is the same as its dtype (both given must agree); int8 / int4 are onnxruntime engines
    (model_dir/onnx-int8/, c4u export CKPT --precision int8). "auto": on CPU onnxruntime when an exported
    engine directory exists (model_dir/onnx/ or model_dir itself) and can run the asked dtype, else torch; on CUDA
    tensorrt (when tensorrt is installed and the engine directory holds built plans that load on this GPU),
    onnxruntime, torch in that order. BackendUnavailableError says why each candidate could not run.
    intra_op_threads: onnxruntime's threads per call ($C4U_ORT_THREADS wins when set; None: its default); the other
    runtimes keep their own. lone_threads: onnxruntime's threads for a call that runs alone (as the engine's
    set_lone_check says; None: intra_op_threads for every call)."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    _check_checkpoint_dir(Path(model_dir))
    if precision is not None:
        precision = normalize_precision(precision)
        if precision in FLOAT_DTYPES:
            if dtype is not None and normalize_precision(str(dtype).removeprefix("torch.")) != precision:
                raise InvalidInputError(f"dtype {dtype!r} and precision {precision!r} disagree; pass one of them")
            dtype = FLOAT_DTYPES[precision]
    reasons = available_backends(Path(model_dir), device, precision)
    if backend == "auto":
        order = ["tensorrt", "onnxruntime", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"]
        for name in order:
            if reasons[name] is None:
                try:
                    return _create(name, model_dir, device, dtype, precision, intra_op_threads, lone_threads)
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
    return _create(backend, model_dir, device, dtype, precision, intra_op_threads, lone_threads)


def _create(backend: str, model_dir: Path, device: str, dtype: str | None, precision: str | None,
            intra_op_threads: int | None = None, lone_threads: int | None = None) -> Runner:
    if backend == "torch":
        from c4u_engine.runners.torch_runner import TorchRunner

        return TorchRunner(model_dir, device=device, dtype=dtype)
    if backend == "onnxruntime":
        from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model_dir, device=device, dtype=dtype, precision=precision,
                                 intra_op_threads=intra_op_threads, lone_threads=lone_threads)
    if backend == "tensorrt":
        from c4u_engine.runners.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(model_dir, device=device, dtype=dtype)
    raise BackendUnavailableError(f"backend {backend!r} is not implemented in this build")
