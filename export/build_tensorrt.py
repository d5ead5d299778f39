"""Build, check and run TensorRT engines from ONNX graphs with the official `tensorrt` Python API (10.x; 11.x-ready).

    python -m export.build_tensorrt ENGINE_DIR [--precision bf16] [--timing-cache PATH] [--graph NAME] [--fp8]

writes ``<graph>.plan`` and its sidecar ``<graph>.plan.json`` for every graph of ENGINE_DIR/manifest.json
(keys read: ``profiles``, ``graphs.<name>.file``, ``graphs.<name>.sha256``, ``tensorrt_plugins``).

Precision and typing. TensorRT 11 removed weak typing (BuilderFlag.FP16/BF16/FP8/INT8): a network's types are
the ONNX graph's types. So a graph that already carries bf16/fp16 tensors is built strongly typed and `precision`
must name its type; an fp32 graph with precision="fp32" is built strongly typed too. Only an fp32 graph asked for
bf16/fp16 uses TensorRT 10's weak-typing flag (deprecated there); on TensorRT 11 that is refused: export the graph
in bf16 (or convert it with ModelOpt AutoCast). FP8 (`fp8=True`, compute capability >= 8.9) needs an explicitly
quantized graph (FLOAT8E4M3FN QuantizeLinear/DequantizeLinear pairs, e.g. from ModelOpt); TensorRT 10 also gets
BuilderFlag.FP8 when the network is weakly typed.

Engines are tied to one TensorRT version and one GPU model: the sidecar records both, the ONNX digest
(:func:`onnx_sha256`) and the profiles, and :func:`load_engine` refuses any mismatch.
Nothing here imports tensorrt (or torch) at module import: without them, calls raise BackendUnavailableError.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError

from export.check_tensorrt import (assert_tensorrt_ready, graph_files, iter_graphs, load_model,
                                   read_manifest)
from export.profiles import Profile, profiles_from_manifest

PRECISIONS = {"fp32": "FLOAT", "bf16": "BFLOAT16", "fp16": "FLOAT16"}  # precision -> ONNX dtype name
SIDECAR_FORMAT = 1
FP8_MIN_CAPABILITY = (8, 9)


def import_tensorrt() -> Any:
    """The `tensorrt` module, or BackendUnavailableError saying why it cannot be used here."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the PyPI wheel without its NVIDIA libraries
        raise BackendUnavailableError(
            f"tensorrt is not installed: {e}. Install NVIDIA TensorRT 10.x Python bindings "
            "(pip install tensorrt-cu12) on a machine with an NVIDIA GPU") from e
    return trt


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``decoder.plan`` -> ``decoder.plan.json``."""
    return Path(f"{engine_path}.json")


def onnx_sha256(onnx_path: str | os.PathLike) -> str:
    """sha256 of an ONNX model file and of its external-data files (sorted by location), so new weights re-key it."""
    path = Path(onnx_path)
    digest = hashlib.sha256()
    _hash_file(digest, path)
    model = load_model(path)
    locations = sorted({e.value for t in _all_initializers(model) for e in t.external_data if e.key == "location"})
    for loc in locations:
        digest.update(b"\0" + loc.encode())
        _hash_file(digest, path.parent / loc)
    return digest.hexdigest()


def _all_initializers(model: Any) -> Iterable[Any]:
    for g in iter_graphs(model.graph):
        yield from g.initializer


def _hash_file(digest: Any, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    except FileNotFoundError as e:
        raise EngineArtifactError(f"file not found: {path}") from e


def current_gpu() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the current CUDA device, read through torch."""
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailableError(f"torch is needed to identify the GPU: {e}") from e
    if not torch.cuda.is_available():
        raise BackendUnavailableError("no CUDA device is available (torch.cuda.is_available() is False)")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))


# ---------------------------------------------------------------------------------------------- typing plan


def typing_plan(trt: Any, precision: str, tensor_types: Mapping[str, int], fp8: bool) -> tuple[bool, list[Any]]:
    """(strongly_typed, builder flags) for a graph whose tensors have `tensor_types` (dtype name -> count)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    has_fp8 = tensor_types.get("FLOAT8E4M3FN", 0) > 0
    if fp8 and not has_fp8:
        raise EngineArtifactError("fp8=True needs an explicitly FP8-quantized graph (FLOAT8E4M3FN "
                                  "QuantizeLinear/DequantizeLinear nodes); this graph has no FP8 tensor")
    if has_fp8 and not fp8:
        raise EngineArtifactError("the graph is FP8-quantized (FLOAT8E4M3FN tensors): pass fp8=True to build it")
    reduced = {t for t in ("BFLOAT16", "FLOAT16") if tensor_types.get(t, 0)}
    wanted = PRECISIONS[precision]
    if reduced or precision == "fp32":
        if reduced and wanted not in reduced:
            raise EngineArtifactError(
                f"precision={precision!r} but the graph's tensors are {' and '.join(sorted(reduced))}; a strongly "
                f"typed build runs the graph's own types: export it in {wanted} or pick the matching precision")
        return True, []
    flag = getattr(trt.BuilderFlag, precision.upper(), None)
    if flag is None:  # TensorRT 11: weak typing is gone
        raise EngineArtifactError(
            f"TensorRT {trt.__version__} builds strongly typed networks only, and this graph is fp32: export it "
            f"in {wanted} (or convert it with ModelOpt AutoCast) to get a {precision} engine")
    flags = [flag]
    if fp8 and getattr(trt.BuilderFlag, "FP8", None) is not None:
        flags.append(trt.BuilderFlag.FP8)
    return False, flags


def format_parser_errors(parser: Any) -> list[str]:
    """One line per ONNX parser error: description, node index, name and operator where TensorRT gives them."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        parts = [f"node {err.node()}"]
        for attr in ("node_name", "node_operator"):
            value = getattr(err, attr, None)
            if callable(value) and value():
                parts.append(f"{attr.replace('node_', '')} {value()}")
        lines.append(f"{err.desc()} ({', '.join(parts)}; code {err.code()})")
    return lines


# ---------------------------------------------------------------------------------------------- build


def _make_logger(trt: Any, verbose: bool) -> Any:
    class _Logger(trt.ILogger):
        """Prints warnings and errors and keeps errors for the exception message."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
            if level <= 1:
                self.errors.append(msg)
            if level <= 2 or verbose:
                print(f"[TensorRT {getattr(severity, 'name', level)}] {msg}", file=sys.stderr)

    return _Logger()


def _make_progress_monitor(trt: Any) -> Any | None:
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):
        """Prints each optimizer phase with its nesting and duration (called from TensorRT's threads)."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._started: dict[str, tuple[float, int]] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = self._started[parent_phase][1] + 1 if parent_phase in self._started else 0
                self._started[phase_name] = (time.monotonic(), depth)
                print(f"{'  ' * depth}[build] {phase_name} ({num_steps} steps)", file=sys.stderr, flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                start, depth = self._started.pop(phase_name, (time.monotonic(), 0))
                print(f"{'  ' * depth}[build] {phase_name} done in {time.monotonic() - start:.1f} s",
                      file=sys.stderr, flush=True)

    return _Progress()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_engine(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    profiles: Sequence[Profile],
    *,
    precision: str = "bf16",
    fp8: bool = False,
    timing_cache_path: str | os.PathLike | None = None,
    workspace_bytes: int | None = None,
    builder_optimization_level: int = 3,
    progress: bool = True,
    plugins: Iterable[str] = (),
    graph_name: str | None = None,
    expected_onnx_sha256: str | None = None,
) -> dict[str, Any]:
    """Build a serialized engine from `onnx_path` into `out_path` (+ sidecar `<out_path>.json`); returns the sidecar.

    One TensorRT optimization profile per entry of `profiles`, in order. The graph is checked statically first
    (export/check_tensorrt.py). `timing_cache_path` is read when present and written after the build.
    `expected_onnx_sha256` (e.g. the manifest's) refuses to build from another ONNX file than the one declared.
    """
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not 0 <= builder_optimization_level <= 5:
        raise InvalidInputError(f"builder_optimization_level must be in 0..5, got {builder_optimization_level}")
    if workspace_bytes is not None and workspace_bytes <= 0:
        raise InvalidInputError(f"workspace_bytes must be positive, got {workspace_bytes}")
    if not profiles:
        raise InvalidInputError("build_engine needs at least one optimization profile")
    trt = import_tensorrt()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    graph_name = graph_name or onnx_path.stem
    report = assert_tensorrt_ready(onnx_path, profiles, plugins=plugins, graph_name=graph_name)
    digest = onnx_sha256(onnx_path)
    if expected_onnx_sha256 is not None and digest != expected_onnx_sha256:
        raise EngineArtifactError(f"{onnx_path}: sha256 {digest} differs from the declared {expected_onnx_sha256}")
    gpu_name, capability = current_gpu()
    if fp8 and capability < FP8_MIN_CAPABILITY:
        raise BackendUnavailableError(f"fp8 needs compute capability >= 8.9; {gpu_name} has {capability}")
    strongly_typed, flags = typing_plan(trt, precision, report.tensor_types, fp8)

    logger = _make_logger(trt, verbose=False)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network_flags = 0
    if strongly_typed and _trt_major(trt) < 11:  # 11.x networks are always strongly typed
        network_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file so external weights resolve beside it
        errors = "\n  ".join(format_parser_errors(parser) or logger.errors or ["(no parser error reported)"])
        raise EngineArtifactError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n  {errors}")

    config = builder.create_builder_config()
    for flag in flags:
        config.set_flag(flag)
    config.builder_optimization_level = builder_optimization_level
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    monitor = _make_progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    for profile in profiles:
        opt = builder.create_optimization_profile()
        for name, rng in profile.shapes.items():
            opt.set_shape(name, rng.min, rng.opt, rng.max)
        config.add_optimization_profile(opt)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):  # False: no foreign cache
        raise EngineArtifactError(f"timing cache {cache_path} was made by another TensorRT version or GPU; "
                                  "delete it or pass another --timing-cache path")

    started = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineArtifactError(f"TensorRT {trt.__version__} failed to build {onnx_path}:\n  "
                                  + "\n  ".join(logger.errors or ["(no error logged)"]))
    plan_bytes = bytes(memoryview(plan))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_path, plan_bytes)
    if cache_path is not None:
        _atomic_write(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    meta = {
        "format": SIDECAR_FORMAT,
        "graph": graph_name,
        "engine_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "tensorrt_version": str(trt.__version__),
        "gpu": {"name": gpu_name, "compute_capability": list(capability)},
        "precision": precision,
        "fp8": fp8,
        "strongly_typed": strongly_typed,
        "builder_optimization_level": builder_optimization_level,
        "onnx": {"file": onnx_path.name, "sha256": digest},
        "profiles": [p.to_json() for p in profiles],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    _atomic_write(sidecar_path(out_path), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


# ---------------------------------------------------------------------------------------------- load


def check_sidecar(
    meta: Mapping[str, Any],
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: Sequence[int],
    expected_onnx_sha256: str | None = None,
    expected_profiles: Sequence[Profile] | None = None,
) -> list[str]:
    """Every reason why an engine with sidecar `meta` must not be loaded here (empty: it may)."""
    problems = []
    if meta.get("format") != SIDECAR_FORMAT:
        problems.append(f"sidecar format {meta.get('format')!r}, expected {SIDECAR_FORMAT}")
    if meta.get("tensorrt_version") != tensorrt_version:
        problems.append(f"built with TensorRT {meta.get('tensorrt_version')}, this is TensorRT {tensorrt_version}")
    gpu = meta.get("gpu") or {}
    if gpu.get("name") != gpu_name or list(gpu.get("compute_capability") or []) != list(compute_capability):
        problems.append(f"built for {gpu.get('name')} (compute capability {gpu.get('compute_capability')}), "
                        f"this GPU is {gpu_name} ({list(compute_capability)})")
    onnx_digest = (meta.get("onnx") or {}).get("sha256")
    if expected_onnx_sha256 is not None and onnx_digest != expected_onnx_sha256:
        problems.append(f"built from ONNX sha256 {onnx_digest}, the manifest declares {expected_onnx_sha256}")
    if expected_profiles is not None and meta.get("profiles") != [p.to_json() for p in expected_profiles]:
        problems.append("its optimization profiles differ from the manifest's")
    return problems


def load_engine(path: str | os.PathLike, manifest: Mapping[str, Any] | None = None, *,
                graph: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(ICudaEngine, sidecar) for a serialized engine, refusing a sidecar that does not match this machine.

    With `manifest`, the engine must also come from the manifest's ONNX digest (``graphs.<graph>.sha256``, when
    declared) and profiles; `graph` defaults to the sidecar's.
    """
    path = Path(path)
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EngineArtifactError(f"{path}: no sidecar {sidecar_path(path).name}; rebuild the engine") from e
    except json.JSONDecodeError as e:
        raise EngineArtifactError(f"{sidecar_path(path)}: not valid JSON: {e}") from e
    trt = import_tensorrt()
    gpu_name, capability = current_gpu()
    expected_sha, expected_profiles = None, None
    if manifest is not None:
        graph = graph or meta.get("graph")
        expected_sha = ((manifest.get("graphs") or {}).get(graph) or {}).get("sha256")
        expected_profiles = profiles_from_manifest(manifest).get(graph) if "profiles" in manifest else None
    problems = check_sidecar(meta, tensorrt_version=str(trt.__version__), gpu_name=gpu_name,
                             compute_capability=capability, expected_onnx_sha256=expected_sha,
                             expected_profiles=expected_profiles)
    plan = path.read_bytes() if path.is_file() else b""
    if not plan:
        problems.append("the engine file is missing or empty")
    elif hashlib.sha256(plan).hexdigest() != meta.get("engine_sha256"):
        problems.append("the engine file's sha256 differs from the sidecar's (corrupt or replaced)")
    if problems:
        raise EngineArtifactError(f"{path}: refusing to load: " + "; ".join(problems))
    logger = _make_logger(trt, verbose=False)
    trt.init_libnvinfer_plugins(logger, "")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)  # the engine keeps its runtime alive
    if engine is None:
        raise EngineArtifactError(f"{path}: TensorRT could not deserialize it: " + "; ".join(logger.errors))
    return engine, meta


# ---------------------------------------------------------------------------------------------- run


class TrtSession:
    """Runs one engine on torch CUDA tensors: picks a profile, sets shapes and addresses, enqueues on a stream."""

    def __init__(self, engine: Any, meta: Mapping[str, Any] | None = None) -> None:
        import torch

        self._trt = import_tensorrt()
        self._torch = torch
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == self._trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.profile_names = [p["name"] for p in (meta or {}).get("profiles", [])]
        self._profile: int | None = None

    def _torch_dtype(self, name: str) -> Any:
        dt, torch = self.engine.get_tensor_dtype(name), self._torch
        table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool,
                 "FP8": torch.float8_e4m3fn}
        for key, value in table.items():
            if dt == getattr(self._trt.DataType, key, None):
                return value
        raise EngineArtifactError(f"tensor '{name}' has TensorRT dtype {dt}, which TrtSession cannot map to torch")

    def profile_index(self, shapes: Mapping[str, Sequence[int]], profile: str | int | None = None) -> int:
        """The profile to use: `profile` (name or index) when given, else the first whose ranges hold `shapes`."""
        if isinstance(profile, str):
            if profile not in self.profile_names:
                raise InvalidInputError(f"unknown profile {profile!r}; profiles: {self.profile_names}")
            return self.profile_names.index(profile)
        if isinstance(profile, int):
            if not 0 <= profile < self.engine.num_optimization_profiles:
                raise InvalidInputError(f"profile index {profile} out of range "
                                        f"0..{self.engine.num_optimization_profiles - 1}")
            return profile
        for index in range(self.engine.num_optimization_profiles):
            if all(self._fits(name, shape, index) for name, shape in shapes.items()):
                return index
        raise InvalidInputError(f"no optimization profile holds input shapes {dict(shapes)}; profiles: "
                                f"{self.profile_names or self.engine.num_optimization_profiles}")

    def _fits(self, name: str, shape: Sequence[int], index: int) -> bool:
        lo, _, hi = self.engine.get_tensor_profile_shape(name, index)
        return len(lo) == len(shape) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))

    def run(self, inputs: Mapping[str, Any], *, profile: str | int | None = None,
            stream: Any | None = None) -> dict[str, Any]:
        """Run on `inputs` (name -> CUDA tensor); returns name -> new output tensor, enqueued on `stream`."""
        torch = self._torch
        missing, extra = set(self.inputs) - set(inputs), set(inputs) - set(self.inputs)
        if missing or extra:
            raise InvalidInputError(f"engine inputs are {self.inputs}; missing {sorted(missing)}, "
                                    f"unexpected {sorted(extra)}")
        stream = stream or torch.cuda.current_stream()
        index = self.profile_index({n: tuple(t.shape) for n, t in inputs.items()}, profile)
        if index != self._profile:
            self.context.set_optimization_profile_async(index, stream.cuda_stream)
            self._profile = index
        keep, outputs = [], {}  # keep: contiguous copies must live until the enqueue
        with torch.cuda.stream(stream):  # allocations and copies belong to the stream that runs the engine
            for name in self.inputs:
                t, want = inputs[name], self._torch_dtype(name)
                if not t.is_cuda or t.dtype != want:
                    raise InvalidInputError(f"input '{name}' must be a CUDA {want} tensor, got {t.dtype} on {t.device}")
                t = t.contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise InvalidInputError(f"input '{name}' shape {tuple(t.shape)} is outside profile {index}")
                self.context.set_tensor_address(name, t.data_ptr())
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineArtifactError(f"output '{name}' has a data-dependent shape {shape}; TrtSession "
                                              "supports outputs whose shapes follow from the input shapes")
                out = torch.empty(shape, dtype=self._torch_dtype(name), device=keep[0].device if keep else "cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for t in keep:
            t.record_stream(stream)
        return outputs


# ---------------------------------------------------------------------------------------------- CLI


def build_engine_dir(engine_dir: str | os.PathLike, *, graphs: Sequence[str] | None = None,
                     **options: Any) -> list[dict[str, Any]]:
    """Build ``<graph>.plan`` (+ sidecar) for each graph of ENGINE_DIR/manifest.json; returns the sidecars."""
    import_tensorrt()  # fail before any progress output
    engine_dir = Path(engine_dir)
    manifest = read_manifest(engine_dir / "manifest.json")
    all_profiles = profiles_from_manifest(manifest)
    files = graph_files(manifest)
    unknown = [g for g in graphs or () if g not in files]
    if unknown:
        raise InvalidInputError(f"unknown graph(s) {unknown}; the manifest names {list(files)}")
    metas = []
    for graph, file in files.items():
        if graphs and graph not in graphs:
            continue
        if graph not in all_profiles:
            raise EngineArtifactError(f"manifest: graph '{graph}' has no entry under 'profiles'")
        print(f"[build] {graph}: {file} -> {graph}.plan", file=sys.stderr, flush=True)
        metas.append(build_engine(
            engine_dir / file, engine_dir / f"{graph}.plan", all_profiles[graph], graph_name=graph,
            plugins=manifest.get("tensorrt_plugins") or (),
            expected_onnx_sha256=((manifest.get("graphs") or {}).get(graph) or {}).get("sha256"), **options))
    return metas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.build_tensorrt",
                                     description="Build TensorRT engines for an engine directory's ONNX graphs.")
    parser.add_argument("engine_dir")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    parser.add_argument("--fp8", action="store_true", help="build an FP8 Q/DQ-quantized graph (sm_89+)")
    parser.add_argument("--timing-cache", help="timing cache file, read if present and written after")
    parser.add_argument("--workspace-gib", type=float, help="builder workspace limit in GiB")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5")
    parser.add_argument("--graph", action="append", help="build only this graph (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        metas = build_engine_dir(
            args.engine_dir, graphs=args.graph, precision=args.precision, fp8=args.fp8,
            timing_cache_path=args.timing_cache, builder_optimization_level=args.opt_level,
            workspace_bytes=int(args.workspace_gib * (1 << 30)) if args.workspace_gib else None,
            progress=not args.quiet)
    except (EngineArtifactError, BackendUnavailableError, InvalidInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for meta in metas:
        print(f"{meta['graph']}.plan: TensorRT {meta['tensorrt_version']}, {meta['gpu']['name']}, "
              f"{meta['precision']}, built in {meta['build_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
