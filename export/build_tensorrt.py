"""Build TensorRT engines from ONNX graphs with the official `tensorrt` Python API (10.x; 11.x-ready).

    python -m export.build_tensorrt ENGINE_DIR [--precision bf16] [--timing-cache PATH] [--graph NAME] [--fp8|--int8]

writes ``<graph>.plan`` and its sidecar ``<graph>.plan.json`` for every graph of ENGINE_DIR/manifest.json
(keys read: ``profiles``, ``graphs.<name>.file``, ``graphs.<name>.sha256``, ``tensorrt_plugins``).

Precision and typing. TensorRT 11 removed weak typing (BuilderFlag.FP16/BF16/FP8/INT8): a network's types are
the ONNX graph's types. So a graph that already carries bf16/fp16 tensors is built strongly typed and `precision`
must name its type; an fp32 graph with precision="fp32" is built strongly typed too. Only an fp32 graph asked for
bf16/fp16 uses TensorRT 10's weak-typing flag (deprecated there); on TensorRT 11 that is refused: export the graph
in bf16 (or convert it with ModelOpt AutoCast). FP8 (`fp8=True`, compute capability >= 8.9) needs an explicitly
quantized graph (FLOAT8E4M3FN QuantizeLinear/DequantizeLinear pairs, e.g. from ModelOpt); TensorRT 10 also gets
BuilderFlag.FP8 when the network is weakly typed. INT8 (`int8=True`, >= 6.1) likewise needs INT8 Q/DQ pairs in the
graph: there is no calibration here (export/tensorrt_precision.py says what each precision needs; the build refuses
a GPU or a graph that cannot give it before TensorRT is asked).

Engines are tied to one TensorRT version and one GPU model: the sidecar records both, the ONNX digest
(:func:`onnx_sha256`) and the profiles, and :func:`load_engine` refuses any mismatch. Loading, the sidecar check
and TrtSession (running an engine on torch CUDA tensors) belong to the runtime (c4u_engine/runners/tensorrt_plan.py,
tensorrt_session.py) and are re-exported here.
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
# The runtime side (loading, sidecar checks, running) lives with the runtime, which must not import export/.
from c4u_engine.runners.tensorrt_plan import (SIDECAR_FORMAT, check_sidecar, current_gpu,  # noqa: F401
                                              import_tensorrt, load_engine, make_logger, sidecar_path)
from c4u_engine.runners.tensorrt_session import TrtSession  # noqa: F401

from export.check_tensorrt import (assert_tensorrt_ready, graph_files, iter_graphs, load_model,
                                   read_manifest)
from export.profiles import ShapeProfile, profiles_from_manifest
from export.tensorrt_precision import precision_problems

PRECISIONS = {"fp32": "FLOAT", "bf16": "BFLOAT16", "fp16": "FLOAT16"}  # precision -> ONNX dtype name


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


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


# ---------------------------------------------------------------------------------------------- typing plan


def typing_plan(trt: Any, precision: str, tensor_types: Mapping[str, int], fp8: bool,
                int8: bool = False) -> tuple[bool, list[Any]]:
    """(strongly_typed, builder flags) for a graph whose tensors have `tensor_types` (dtype name -> count)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    _, graph_problems = precision_problems(_flags(precision, fp8, int8), None, tensor_types)
    if graph_problems:
        raise EngineArtifactError("; ".join(graph_problems))
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
    for wanted, name in ((fp8, "FP8"), (int8, "INT8")):
        if wanted and getattr(trt.BuilderFlag, name, None) is not None:
            flags.append(getattr(trt.BuilderFlag, name))
    return False, flags


def _flags(precision: str, fp8: bool, int8: bool) -> list[str]:
    return [precision] + (["fp8"] if fp8 else []) + (["int8"] if int8 else [])


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
    profiles: Sequence[ShapeProfile],
    *,
    precision: str = "bf16",
    fp8: bool = False,
    int8: bool = False,
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
    gpu_problems, _ = precision_problems(_flags(precision, fp8, int8), capability, report.tensor_types)
    if gpu_problems:
        raise BackendUnavailableError(f"{gpu_name}: " + "; ".join(gpu_problems))
    strongly_typed, flags = typing_plan(trt, precision, report.tensor_types, fp8, int8)

    logger = make_logger(trt)
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
        "int8": int8,
        "strongly_typed": strongly_typed,
        "builder_optimization_level": builder_optimization_level,
        "onnx": {"file": onnx_path.name, "sha256": digest},
        "profiles": [p.to_json() for p in profiles],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    _atomic_write(sidecar_path(out_path), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


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
    parser.add_argument("--int8", action="store_true", help="build an INT8 Q/DQ-quantized graph (sm_61+; no "
                                                            "calibration: the quantization must be in the graph)")
    parser.add_argument("--timing-cache", help="timing cache file, read if present and written after")
    parser.add_argument("--workspace-gib", type=float, help="builder workspace limit in GiB")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5")
    parser.add_argument("--graph", action="append", help="build only this graph (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        metas = build_engine_dir(
            args.engine_dir, graphs=args.graph, precision=args.precision, fp8=args.fp8, int8=args.int8,
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
