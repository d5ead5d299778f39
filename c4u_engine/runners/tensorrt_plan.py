"""Built TensorRT plans at run time: find, check and load them; read their optimization profiles; pick the profile
that holds a call's shapes, splitting a batch that no profile holds whole.

An engine directory (engine_dir.py) gains, per graph, ``<graph>.plan`` (the serialized engine) and
``<graph>.plan.json`` (its sidecar), written by ``python -m export.build_tensorrt``. Sidecar::

    {"format": 1, "graph": "decoder", "engine_sha256": "..", "tensorrt_version": "10.x.y.z",
     "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
     "precision": "bf16", "fp8": false, "strongly_typed": true, "builder_optimization_level": 3,
     "onnx": {"file": "decoder.onnx", "sha256": "<the manifest's graphs.decoder.sha256>"},
     "profiles": [<the manifest's profiles.decoder, in TensorRT index order>], "build_seconds": 12.3}

A plan is tied to one TensorRT version and one GPU model, and was built from one ONNX file with one list of
profiles: load_plan refuses (EngineArtifactError naming every problem) anything that differs, and a plan whose
bytes are not the ones the sidecar hashed. Profile choice works on the manifest's profiles (equal to the sidecar's
once checked), in plain Python: no TensorRT needed to test it. tensorrt and torch are imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, LimitExceededError

SIDECAR_FORMAT = 1
PLAN_SUFFIX = ".plan"
GRAPHS = ("vision", "decoder")

Shape = tuple[int, ...]


def import_tensorrt() -> Any:
    """The `tensorrt` module, or BackendUnavailableError saying why it cannot be used here."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the PyPI wheel without its NVIDIA libraries
        raise BackendUnavailableError(
            f"tensorrt is not installed: {exc}. Install NVIDIA TensorRT 10.x Python bindings "
            "(pip install tensorrt-cu12) on a machine with an NVIDIA GPU") from exc
    return trt


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    """``decoder.plan`` -> ``decoder.plan.json``."""
    return Path(f"{plan_path}.json")


def plan_path(engine_dir: str | os.PathLike, graph: str) -> Path:
    """Where python -m export.build_tensorrt writes `graph`'s plan in an engine directory."""
    return Path(engine_dir) / f"{graph}{PLAN_SUFFIX}"


def missing_plans_reason(engine_dir: str | os.PathLike) -> str | None:
    """Why `engine_dir` cannot feed the TensorRT runtime (a plan or sidecar missing), or None when all are there.
    Only looks for files: load_plan does the real checks."""
    missing = [p.name for g in GRAPHS for p in (plan_path(engine_dir, g), sidecar_path(plan_path(engine_dir, g)))
               if not p.is_file()]
    if not missing:
        return None
    return (f"{engine_dir} holds no built TensorRT plans (missing {', '.join(missing)}); build them on this GPU: "
            f"python -m export.build_tensorrt {engine_dir}")


def current_gpu(index: int | None = None) -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of CUDA device `index` (default: the current one), read through torch."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(f"torch is needed to identify the GPU: {exc}") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailableError("no CUDA device is available (torch.cuda.is_available() is False)")
    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))


# ---------------------------------------------------------------------------------------------- checks


def _profiles_json(profiles: Sequence[Any]) -> list[Any]:
    """Profiles as JSON values: objects with to_json() (export.profiles.ShapeProfile, PlanProfile) or JSON already."""
    return [p.to_json() if hasattr(p, "to_json") else p for p in profiles]


def check_sidecar(
    meta: Mapping[str, Any],
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: Sequence[int],
    expected_onnx_sha256: str | None = None,
    expected_profiles: Sequence[Any] | None = None,
    graph: str | None = None,
) -> list[str]:
    """Every reason why a plan with sidecar `meta` must not be loaded here (empty: it may)."""
    problems = []
    if meta.get("format") != SIDECAR_FORMAT:
        problems.append(f"sidecar format {meta.get('format')!r}, expected {SIDECAR_FORMAT}")
    if graph is not None and meta.get("graph") != graph:
        problems.append(f"it is the plan of graph {meta.get('graph')!r}, expected {graph!r}")
    if meta.get("tensorrt_version") != tensorrt_version:
        problems.append(f"built with TensorRT {meta.get('tensorrt_version')}, this is TensorRT {tensorrt_version}")
    gpu = meta.get("gpu") or {}
    if gpu.get("name") != gpu_name or list(gpu.get("compute_capability") or []) != list(compute_capability):
        problems.append(f"built for {gpu.get('name')} (compute capability {gpu.get('compute_capability')}), "
                        f"this GPU is {gpu_name} ({list(compute_capability)})")
    onnx_digest = (meta.get("onnx") or {}).get("sha256")
    if expected_onnx_sha256 is not None and onnx_digest != expected_onnx_sha256:
        problems.append(f"built from ONNX sha256 {onnx_digest}, the manifest declares {expected_onnx_sha256}")
    if expected_profiles is not None and meta.get("profiles") != _profiles_json(expected_profiles):
        problems.append("its optimization profiles differ from the manifest's")
    return problems


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of plan `path`; EngineArtifactError when it is missing or not a JSON object."""
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EngineArtifactError(f"{path}: no sidecar {side.name}; rebuild the engine "
                                  f"(python -m export.build_tensorrt)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineArtifactError(f"{side}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise EngineArtifactError(f"{side}: must be a JSON object, found {type(meta).__name__}")
    return meta


def plan_bytes_problems(plan: bytes, meta: Mapping[str, Any]) -> list[str]:
    """Why the plan's bytes must not be loaded (empty, or not the bytes the sidecar hashed); [] if they may."""
    if not plan:
        return ["the engine file is missing or empty"]
    if hashlib.sha256(plan).hexdigest() != meta.get("engine_sha256"):
        return ["the engine file's sha256 differs from the sidecar's (corrupt or replaced)"]
    return []


def make_logger(trt: Any, verbose: bool = False) -> Any:
    """A trt.ILogger that prints warnings and errors to stderr and keeps errors for exception messages."""

    class _Logger(trt.ILogger):
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


@dataclass
class LoadedPlan:
    """A deserialized engine with its runtime (kept alive as long as the engine) and its sidecar."""

    path: Path
    engine: Any
    runtime: Any
    meta: dict[str, Any]


def load_plan(path: str | os.PathLike, manifest: Mapping[str, Any] | None = None, *, graph: str | None = None,
              gpu: tuple[str, Sequence[int]] | None = None) -> LoadedPlan:
    """Check and deserialize the plan at `path` (trt.Runtime.deserialize_cuda_engine).

    Refuses, with one EngineArtifactError naming every problem: a missing sidecar or plan, another TensorRT
    version, another GPU (name or compute capability), a plan whose sha256 is not the sidecar's, and, with
    `manifest`, a plan of another graph or built from another ONNX digest (``graphs.<graph>.sha256``) or other
    profiles (``profiles.<graph>``). `graph` defaults to the sidecar's; `gpu` (name, capability) to the
    current CUDA device's.
    """
    path = Path(path)
    meta = read_sidecar(path)
    trt = import_tensorrt()
    gpu_name, capability = gpu if gpu is not None else current_gpu()
    expected_sha, expected_profiles = None, None
    if manifest is not None:
        graph = graph or meta.get("graph")
        expected_sha = ((manifest.get("graphs") or {}).get(graph) or {}).get("sha256")
        if "profiles" in manifest:
            expected_profiles = (manifest.get("profiles") or {}).get(graph) or []
    problems = check_sidecar(meta, tensorrt_version=str(trt.__version__), gpu_name=gpu_name,
                             compute_capability=capability, expected_onnx_sha256=expected_sha,
                             expected_profiles=expected_profiles, graph=graph)
    plan = path.read_bytes() if path.is_file() else b""
    problems += plan_bytes_problems(plan, meta)
    if problems:
        raise EngineArtifactError(f"{path}: refusing to load: " + "; ".join(problems))
    logger = make_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineArtifactError(f"{path}: TensorRT could not deserialize it: " + "; ".join(logger.errors))
    return LoadedPlan(path, engine, runtime, meta)


def load_engine(path: str | os.PathLike, manifest: Mapping[str, Any] | None = None, *,
                graph: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(ICudaEngine, sidecar) for a plan, with load_plan's checks."""
    plan = load_plan(path, manifest, graph=graph)
    return plan.engine, plan.meta


# ---------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class PlanProfile:
    """One optimization profile of a graph: per input name, (min, opt, max) shapes."""

    name: str
    shapes: Mapping[str, tuple[Shape, Shape, Shape]]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {n: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                                              for n, (lo, opt, hi) in self.shapes.items()}}


def read_profiles(manifest: Mapping[str, Any], graph: str, where: str = "manifest") -> tuple[PlanProfile, ...]:
    """``manifest["profiles"][graph]`` (export/profiles.py's schema) in TensorRT index order."""
    entries = (manifest.get("profiles") or {}).get(graph) if isinstance(manifest.get("profiles"), Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise EngineArtifactError(f"{where}: profiles.{graph} must be a non-empty list of TensorRT optimization "
                                  f"profiles (re-export with c4u export)")
    out = []
    for i, entry in enumerate(entries):
        try:
            shapes = {name: tuple(tuple(int(d) for d in rng[k]) for k in ("min", "opt", "max"))
                      for name, rng in entry["shapes"].items()}
            out.append(PlanProfile(str(entry["name"]), shapes))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EngineArtifactError(f"{where}: profiles.{graph}[{i}] is malformed ({exc!r})") from exc
    return tuple(out)


def misfit(profile: PlanProfile, shapes: Mapping[str, Shape],
           labels: Mapping[tuple[str, int], str] | None = None) -> str | None:
    """Why `shapes` (input name -> shape) fall outside `profile`, naming the first input axis out of range;
    None when they fit. An input the profile does not list has a static shape and is not checked."""
    for name, shape in shapes.items():
        if name not in profile.shapes:
            continue
        lo, _, hi = profile.shapes[name]
        if len(shape) != len(lo):
            return f"{name} has rank {len(shape)}, the profile rank {len(lo)}"
        for axis, (a, s, b) in enumerate(zip(lo, shape, hi)):
            if not a <= s <= b:
                what = (labels or {}).get((name, axis))
                place = f"{what} ({name} axis {axis})" if what else f"{name} axis {axis}"
                return f"{place} is {s}, the profile allows {a}..{b}"
    return None


def choose_profile(profiles: Sequence[PlanProfile], shapes: Mapping[str, Shape]) -> int | None:
    """Index of the profile that holds `shapes` and is nearest to them at its opt shapes (the shapes its kernels
    were tuned for), or None when none holds them."""
    best, best_distance = None, math.inf
    for index, profile in enumerate(profiles):
        if misfit(profile, shapes) is not None:
            continue
        distance = sum(abs(math.log1p(s) - math.log1p(o)) for name, shape in shapes.items()
                       if name in profile.shapes for s, o in zip(shape, profile.shapes[name][1]))
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def with_rows(shapes: Mapping[str, Shape], batch_axes: Mapping[str, int], rows: int) -> dict[str, Shape]:
    """`shapes` with `rows` on every input's batch axis."""
    out = dict(shapes)
    for name, axis in batch_axes.items():
        if name in out:
            shape = list(out[name])
            shape[axis] = rows
            out[name] = tuple(shape)
    return out


def split_rows(profiles: Sequence[PlanProfile], shapes: Mapping[str, Shape], batch_axes: Mapping[str, int], *,
               graph: str = "graph", labels: Mapping[tuple[str, int], str] | None = None
               ) -> list[tuple[int, int, int]]:
    """How to run a call of `shapes`: (first row, end row, profile index) chunks along the batch.

    One chunk when a profile holds the whole call; else as few chunks of near-equal size as the profile with
    the largest batch that holds one row allows. LimitExceededError when no profile holds even one row (a
    context or prompt longer than every profile's max), naming each profile's limit that was hit.
    """
    name0, axis0 = next((n, a) for n, a in batch_axes.items() if n in shapes)
    batch = shapes[name0][axis0]
    whole = choose_profile(profiles, shapes)
    if whole is not None:
        return [(0, batch, whole)]
    cap = 0
    for profile in profiles:
        ranges = [(profile.shapes[n][0][a], profile.shapes[n][2][a]) for n, a in batch_axes.items()
                  if n in profile.shapes and n in shapes]
        lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
        if lo <= 1 <= hi and misfit(profile, with_rows(shapes, batch_axes, hi)) is None:
            cap = max(cap, hi)
    if cap == 0:
        why = "; ".join(f"profile '{p.name}': {misfit(p, with_rows(shapes, batch_axes, 1), labels)}"
                        for p in profiles)
        raise LimitExceededError(f"{graph}: one row of this call fits no TensorRT optimization profile ({why}); "
                                 f"shorten the input or re-export with larger limits (c4u export --help) "
                                 f"and rebuild the plans")
    count = -(-batch // cap)
    chunks, start = [], 0
    for i in range(count):
        rows = batch // count + (1 if i < batch % count else 0)
        index = choose_profile(profiles, with_rows(shapes, batch_axes, rows))
        if index is None:  # cannot happen for profiles whose batch ranges start at 1; kept as a clear failure
            raise LimitExceededError(f"{graph}: no TensorRT optimization profile holds a chunk of {rows} rows")
        chunks.append((start, start + rows, index))
        start += rows
    return chunks
