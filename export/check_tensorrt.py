"""Static TensorRT readiness check of an ONNX graph: runs anywhere, needs only `onnx` (no TensorRT, no GPU).

It answers "will TensorRT's ONNX parser take this graph with these profiles?" before a slow build on a GPU box:
ops against the onnx-tensorrt support list (export/tensorrt_ops.json), the list's restrictions that matter to
transformer graphs, opset, tensor dtypes (after shape inference), and optimization-profile coverage.

    python -m export.check_tensorrt ENGINE_DIR_OR_ONNX [--manifest M] [--graph NAME] [--plugin OP]

Manifest keys read (engine directory's manifest.json): ``profiles`` (see export/profiles.py),
``graphs.<name>.file`` (default ``<name>.onnx``) and ``tensorrt_plugins`` (op types, or ``domain::op``, that a
TensorRT plugin implements: such nodes are not reported as unsupported).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from c4u_engine.errors import EngineArtifactError, InvalidInputError
from c4u_engine.runners.engine_dir import read_manifest

from export.profiles import GraphDim, ShapeProfile, profiles_from_manifest, validate_profiles
from export.tensorrt_precision import NEEDS, parse_capability, precision_problems, requirement_lines

OPS_JSON = Path(__file__).with_name("tensorrt_ops.json")
MIN_OPSET = 17  # the project's floor: LayerNormalization and friends exist from 17 on
ONNX_DOMAINS = ("", "ai.onnx")
_LISTED_DTYPES = 10  # tensor names shown per dtype problem


@functools.lru_cache(maxsize=1)
def supported_ops() -> dict[str, Any]:
    """The parsed export/tensorrt_ops.json (TensorRT's ONNX operator support list)."""
    with open(OPS_JSON, encoding="utf-8") as f:
        return json.load(f)


@dataclass
class CheckReport:
    """Result of :func:`check_graph`: problems fail the check, warnings do not."""

    source: str
    tensorrt_version: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tensor_types: dict[str, int] = field(default_factory=dict)  # ONNX dtype name -> number of tensors

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        head = (f"{self.source}: ready for TensorRT {self.tensorrt_version}" if self.ok else
                f"{self.source}: {len(self.problems)} problem(s) for TensorRT {self.tensorrt_version}")
        lines = [head] + [f"  - {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def load_model(model: Any) -> Any:
    """An onnx.ModelProto from a ModelProto or a path; external weights are not read (the check needs none)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise EngineArtifactError(f"ONNX file not found: {path}")
        try:
            return onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError and friends
            raise EngineArtifactError(f"{path}: not a readable ONNX model: {e}") from e
    raise InvalidInputError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")


def check_graph(
    model: Any,
    profiles: Sequence[ShapeProfile] | None = None,
    *,
    plugins: Iterable[str] = (),
    graph_name: str | None = None,
) -> CheckReport:
    """Check one ONNX graph (ModelProto or path) against TensorRT's support list and the given profiles.

    `plugins` names ops implemented by TensorRT plugins ("OpType" or "domain::OpType"); `graph_name` names the
    graph in messages and profile checks (default: the file stem, or the graph's own name).
    """
    source = str(model) if isinstance(model, (str, os.PathLike)) else (model.graph.name or "<model>")
    name = graph_name or (Path(model).stem if isinstance(model, (str, os.PathLike)) else source)
    proto = load_model(model)
    table = supported_ops()
    report = CheckReport(source, table["tensorrt_version"])
    report.problems += _check_opset(proto, table)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False)
    except Exception as e:  # an unknown op can break inference; declared types are still checked
        report.warnings.append(f"ONNX shape inference failed ({e}); checked declared tensor types only")
        inferred = proto
    types = _tensor_types(inferred)
    report.tensor_types = dict(Counter(onnx.TensorProto.DataType.Name(t) for t, _ in types.values()))
    report.problems += _check_dtypes(types, table)
    _check_nodes(inferred, table, set(plugins), types, report)
    report.problems += [f"graph input '{vi.name}' declares no shape; TensorRT needs the rank of every input"
                        for vi in proto.graph.input if vi.type.HasField("tensor_type")
                        and not vi.type.tensor_type.HasField("shape")]
    report.problems += validate_profiles(name, list(profiles or ()), graph_inputs(proto))
    return report


def assert_tensorrt_ready(model: Any, profiles: Sequence[ShapeProfile] | None = None, *,
                          plugins: Iterable[str] = (), graph_name: str | None = None) -> CheckReport:
    """:func:`check_graph`, raising EngineArtifactError that lists every problem when there is one."""
    report = check_graph(model, profiles, plugins=plugins, graph_name=graph_name)
    if not report.ok:
        raise EngineArtifactError(report.format())
    return report


def graph_inputs(model: Any) -> dict[str, list[GraphDim]]:
    """Real graph inputs (initializers listed as inputs excluded): name -> dims (int, symbol or None)."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[GraphDim]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims: list[GraphDim] = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out[vi.name] = dims
    return out


# ---------------------------------------------------------------------------------------------- graph walk


def iter_graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_graphs(attr.g)
            for g in attr.graphs:
                yield from iter_graphs(g)


def _all_nodes(model: Any) -> Iterator[tuple[Any, str]]:
    """(node, where) for the main graph, its subgraphs and model-local function bodies."""
    for g in iter_graphs(model.graph):
        for node in g.node:
            yield node, ""
    for fn in model.functions:
        for node in fn.node:
            yield node, f" in local function {fn.domain}::{fn.name}"


def _tensor_types(model: Any) -> dict[str, tuple[int, str]]:
    """Tensor name -> (ONNX elem type, kind) over inputs, outputs, initializers, value_info and Constant values."""
    out: dict[str, tuple[int, str]] = {}
    top_io = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output}
    for g in iter_graphs(model.graph):
        for kind, infos in (("input", g.input), ("output", g.output), ("value", g.value_info)):
            for vi in infos:
                t = vi.type
                if t.HasField("tensor_type"):
                    if t.tensor_type.elem_type:
                        out.setdefault(vi.name, (t.tensor_type.elem_type, kind if vi.name in top_io else "value"))
                else:
                    out[vi.name] = (0, f"non-tensor {t.WhichOneof('value')}")
        for init in g.initializer:
            out[init.name] = (init.data_type, "initializer")
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ONNX_DOMAINS:
                for attr in node.attribute:
                    if attr.HasField("t"):
                        out[node.output[0]] = (attr.t.data_type, "constant")
    return out


def _constants(model: Any) -> set[str]:
    """Names TensorRT's parser sees as build-time constants: initializers and Constant outputs."""
    names: set[str] = set()
    for g in iter_graphs(model.graph):
        names |= {t.name for t in g.initializer}
        names |= {n.output[0] for n in g.node if n.op_type == "Constant" and n.domain in ONNX_DOMAINS}
    return names


# ---------------------------------------------------------------------------------------------- checks


def _check_opset(model: Any, table: Mapping[str, Any]) -> list[str]:
    versions = [o.version for o in model.opset_import if o.domain in ONNX_DOMAINS]
    if not versions:
        return ["the model imports no ai.onnx opset"]
    v, lo, hi = max(versions), table["opset_min"], table["opset_max"]
    if v < MIN_OPSET:
        return [f"opset {v} is below {MIN_OPSET}, the lowest this project builds TensorRT engines from "
                f"(TensorRT {table['tensorrt_version']} covers {lo}..{hi}); re-export with opset_version>={MIN_OPSET}"]
    if v > hi:
        return [f"opset {v} is above {hi}, the highest TensorRT {table['tensorrt_version']} supports"]
    return []


def _check_dtypes(types: Mapping[str, tuple[int, str]], table: Mapping[str, Any]) -> list[str]:
    supported = set(table["tensor_types"]["supported"]) - set(table["tensor_types"]["limited"])
    io_only = table["tensor_types"]["io_only"]
    bad: dict[str, list[str]] = {}
    for name, (elem, kind) in types.items():
        if elem == 0:
            bad.setdefault(kind, []).append(name)  # sequence/map/optional values
            continue
        dtype = onnx.TensorProto.DataType.Name(elem)
        if dtype not in supported or (dtype in io_only and kind not in ("input", "output")):
            bad.setdefault(dtype, []).append(f"{name} ({kind})")
    problems = []
    for dtype, names in sorted(bad.items()):
        why = (table["tensor_types"]["limited"].get(dtype) or table["tensor_types"]["io_only"].get(dtype)
               or "not a TensorRT tensor type")
        shown = ", ".join(names[:_LISTED_DTYPES]) + (f" and {len(names) - _LISTED_DTYPES} more"
                                                     if len(names) > _LISTED_DTYPES else "")
        problems.append(f"{len(names)} tensor(s) of type {dtype} ({why}; TensorRT {table['tensorrt_version']}): "
                        f"{shown}")
    return problems


def _check_nodes(model: Any, table: Mapping[str, Any], plugins: set[str],
                 types: Mapping[str, tuple[int, str]], report: CheckReport) -> None:
    ops, version = table["operators"], table["tensorrt_version"]
    functions = {(f.domain, f.name) for f in model.functions}
    consts = _constants(model)
    for node, where in _all_nodes(model):
        label = f"node '{node.name or '<unnamed>'}' ({node.op_type}{where})"
        if (node.domain, node.op_type) in functions or node.op_type in plugins or \
                f"{node.domain}::{node.op_type}" in plugins:
            continue
        if node.domain not in ONNX_DOMAINS:
            report.problems.append(
                f"{label}: op '{node.domain}::{node.op_type}' is outside ai.onnx; TensorRT {version}'s ONNX parser "
                f"needs a plugin for it (declare it in the manifest's tensorrt_plugins) or an ai.onnx rewrite")
            continue
        entry = ops.get(node.op_type)
        if entry is None:
            report.problems.append(f"{label}: op {node.op_type} is not in TensorRT {version}'s supported ONNX "
                                   f"operator list")
            continue
        if not entry["supported"]:
            report.problems.append(f"{label}: op {node.op_type} is listed as unsupported by TensorRT {version}")
            continue
        report.problems += [f"{label}: {msg} (TensorRT {version}: {entry.get('restrictions', '')})"
                            for msg in _restriction_problems(node, consts)]
        dtype_warning = _dtype_warning(node, entry, types, table)
        if dtype_warning:
            report.warnings.append(f"{label}: {dtype_warning}")


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _present(names: Sequence[str], index: int) -> bool:
    return len(names) > index and bool(names[index])


_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


def _restriction_problems(node: Any, consts: set[str]) -> list[str]:
    """The support list's restrictions that can be read off one node."""
    op, ins, outs, out = node.op_type, node.input, node.output, []
    if op.startswith("Reduce") and _present(ins, 1) and ins[1] not in consts:
        out.append(f"axes '{ins[1]}' is computed at run time; it must be an initializer")
    elif op == "ScatterND" and _attr(node, "reduction", "none") != "none":
        out.append(f"reduction='{_attr(node, 'reduction')}' is unsupported")
    elif op == "TopK" and _attr(node, "sorted", 1) != 1:
        out.append("sorted=0 is unsupported")
    elif op == "LayerNormalization" and any(_present(outs, i) for i in (1, 2)):
        out.append("only the first output Y is supported, but Mean/InvStdDev outputs are used")
    elif op == "Attention":
        if any(_present(ins, i) for i in (4, 5, 6)):
            out.append("past_key/past_value/nonpad_kv_seqlen inputs are unsupported")
        if any(_present(outs, i) for i in (1, 2, 3)):
            out.append("present_key/present_value/qk_matmul_output outputs are unsupported")
        if _attr(node, "softcap", 0.0) or _attr(node, "qk_matmul_output_mode", 0):
            out.append("softcap/qk_matmul_output_mode attributes are unsupported")
    elif op == "Resize":
        if _attr(node, "antialias", 0):
            out.append("antialias=1 is unsupported")
        if _attr(node, "mode", "nearest") not in ("nearest", "linear"):
            out.append(f"mode='{_attr(node, 'mode')}' is unsupported")
        if _attr(node, "coordinate_transformation_mode", "half_pixel") not in _RESIZE_COORDS:
            out.append(f"coordinate_transformation_mode='{_attr(node, 'coordinate_transformation_mode')}' "
                       "is unsupported")
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            out.append(f"keep_aspect_ratio_policy='{_attr(node, 'keep_aspect_ratio_policy')}' is unsupported")
    elif op == "MaxPool" and _present(outs, 1):
        out.append("the Indices output is unsupported")
    elif op == "Dropout" and _present(ins, 2) and ins[2] not in consts:
        out.append(f"training_mode '{ins[2]}' must be an initializer that is False")
    elif op in ("CumSum", "OneHot") and _present(ins, 1) and ins[1] not in consts:
        out.append(f"input '{ins[1]}' must be a build-time constant")
    elif op == "TensorScatter" and _attr(node, "axis", -2) != -2:
        out.append(f"axis={_attr(node, 'axis')} is unsupported (must be -2)")
    elif op == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings")
                                  for a in node.attribute):
        out.append("sparse_value/value_string(s) attributes are unsupported")
    if op in ("AveragePool", "MaxPool", "LpPool") and any(d != 1 for d in _attr(node, "dilations", []) or []):
        out.append("dilations must be empty or all ones")
    return out


# Which input carries the type the list's "Supported Types" column speaks of (default: input 0).
_TYPED_INPUT = {"Where": 1}
_TYPED_OUTPUT = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike"}


def _dtype_warning(node: Any, entry: Mapping[str, Any], types: Mapping[str, tuple[int, str]],
                   table: Mapping[str, Any]) -> str | None:
    """A warning when the node's data type is outside the list's types (the list is known to be incomplete)."""
    listed = {table["type_names"][t] for t in entry.get("types", ())}
    names = node.output if node.op_type in _TYPED_OUTPUT else node.input
    index = 0 if node.op_type in _TYPED_OUTPUT else _TYPED_INPUT.get(node.op_type, 0)
    if not listed or not _present(names, index) or names[index] not in types:
        return None
    elem = types[names[index]][0]
    dtype = onnx.TensorProto.DataType.Name(elem) if elem else None
    if dtype is None or dtype in listed or dtype in table["tensor_types"]["quantized_only"]:
        return None
    return f"'{names[index]}' is {dtype}, which the list does not name for {node.op_type} ({', '.join(sorted(listed))})"


# ---------------------------------------------------------------------------------------------- engine dirs


def graph_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Graph name -> ONNX file name, from ``graphs`` and ``profiles`` of a manifest."""
    graphs = manifest.get("graphs") or {}
    names = list(graphs) + [g for g in (manifest.get("profiles") or {}) if g not in graphs]
    return {g: (graphs.get(g) or {}).get("file", f"{g}.onnx") for g in names}


def check_target(target: str | os.PathLike, manifest_path: str | os.PathLike | None = None,
                 graph: str | None = None, plugins: Iterable[str] = (), precisions: Sequence[str] = (),
                 capability: tuple[int, int] | None = None) -> list[CheckReport]:
    """Check an engine directory (every graph of its manifest) or one ONNX file (profiles from the manifest).

    precisions (e.g. ["bf16", "fp8"]) and capability (the target GPU's, e.g. (8, 9)): also check that the target
    can run them and that each graph carries what they need (export/tensorrt_precision.py)."""
    reports = _check_target(target, manifest_path, graph, plugins)
    if precisions:
        for report in reports:
            target_problems, graph_problems = precision_problems(precisions, capability, report.tensor_types)
            report.problems += target_problems + graph_problems
    return reports


def _check_target(target: str | os.PathLike, manifest_path: str | os.PathLike | None, graph: str | None,
                  plugins: Iterable[str]) -> list[CheckReport]:
    target = Path(target)
    if manifest_path is None and target.is_dir():
        manifest_path = target / "manifest.json"
    manifest = read_manifest(manifest_path) if manifest_path is not None else {}
    all_profiles = profiles_from_manifest(manifest) if "profiles" in manifest else {}
    plugins = list(plugins) + list(manifest.get("tensorrt_plugins") or [])
    if target.is_dir():
        files = graph_files(manifest)
        if not files:
            raise EngineArtifactError(f"{manifest_path}: names no graphs (keys 'graphs' / 'profiles')")
        if graph is not None and graph not in files:
            raise EngineArtifactError(f"{manifest_path}: no graph '{graph}' (graphs: {', '.join(files)})")
        reports = []
        for g, f in files.items():
            if graph is None or g == graph:
                try:
                    reports.append(check_graph(target / f, all_profiles.get(g), plugins=plugins, graph_name=g))
                except EngineArtifactError as e:  # an unreadable graph must not hide the others' problems
                    reports.append(CheckReport(str(target / f), supported_ops()["tensorrt_version"], [str(e)]))
        return reports
    name = graph or target.stem
    return [check_graph(target, all_profiles.get(name), plugins=plugins, graph_name=name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.check_tensorrt", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="engine directory (with manifest.json) or an .onnx file")
    parser.add_argument("--manifest", help="manifest.json (default: TARGET/manifest.json for a directory)")
    parser.add_argument("--graph", help="check only this graph (for a file: its name in the manifest)")
    parser.add_argument("--plugin", action="append", default=[], help="op implemented by a TensorRT plugin")
    parser.add_argument("--precision", action="append", choices=list(NEEDS), default=[],
                        help="check what this precision needs (repeatable: --precision bf16 --precision fp8)")
    parser.add_argument("--target-sm", help="the target GPU's compute capability, e.g. 8.9 (with --precision)")
    args = parser.parse_args(argv)
    try:
        capability = parse_capability(args.target_sm) if args.target_sm else None
        for line in requirement_lines(args.precision):
            print(f"needs: {line}")
        reports = check_target(args.target, args.manifest, args.graph, args.plugin, args.precision, capability)
    except (EngineArtifactError, InvalidInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in reports:
        print(r.format(), file=sys.stdout if r.ok else sys.stderr)
    return 0 if reports and all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
