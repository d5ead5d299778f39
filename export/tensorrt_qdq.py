"""Explicitly quantized (Q/DQ) graphs for TensorRT's INT8 / FP8 builds, with SmoothQuant's smoothed weights.

    python -m export.tensorrt_qdq FP32_ENGINE_DIR --out DIR --kind int8|fp8 [--calibration DIR] [--alpha A]
    python -m export.build_tensorrt DIR --precision fp16 --int8        # (or --fp8), on the GPU machine

TensorRT 10 deprecated implicit INT8 calibration and 11 removed it (export/tensorrt_precision.py): an INT8 or FP8
engine is built from a graph that carries its quantization as QuantizeLinear / DequantizeLinear pairs. This writes
such a graph from an fp32 export, the same way the onnxruntime int8 engines are made (export/quantize.py):
the vision tower's Gemms as MatMuls, SmoothQuant's factors from the calibration set folded into the norms and up
projections (alpha chosen per graph on the calibration error unless given), then every weight MatMul outside the
float-kept units reads
    x -> QuantizeLinear(scale_x, 0) -> DequantizeLinear     one static scale per tensor (TensorRT's INT8/FP8
                                                            activations), max |x| over the calibration set after
                                                            smoothing / 127 (int8) or / 448 (fp8 E4M3)
    W -> DequantizeLinear(W_q, scale_w[N], axis=1)          weights stored quantized, one scale per output channel
A Q/DQ pair is shared by the MatMuls that read the same activation. Static per-tensor activation scales are what
TensorRT's INT8/FP8 GEMMs take; smoothing is what makes one scale per tensor bearable on checkpoints with outlier
channels (tests/export/test_tensorrt_qdq.py measures it on one). The graphs are float32 elsewhere: build them with
--precision fp16 / bf16 (TensorRT 10 weak typing) or convert them first. fp8 graphs are written at opset 19 (the
first with float8 Q/DQ). The manifest records precision "int8" / "fp8" with method "c4u.smoothquant_qdq", the
smoothing, the calibration set and the Q/DQ census; check it with python -m export.check_tensorrt DIR --precision
int8 (no TensorRT needed). No GPU here: these graphs have been checked statically and run by onnxruntime on CPU
(int8), never built by TensorRT.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from c4u_engine.errors import C4UError, InvalidInputError
from c4u_engine.runners.engine_dir import GRAPH_NAMES, MANIFEST_FILE, load_engine_dir

from export.build_tensorrt import onnx_sha256
from export.graph_edit import replace_nodes
from export.manifest import write_manifest

KINDS = {"int8": (TensorProto.INT8, 127.0), "fp8": (TensorProto.FLOAT8E4M3FN, 448.0)}
FP8_OPSET = 19


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def qdq_engine(src_dir: str | Path, out_dir: str | Path, kind: str = "int8", *,
               float_kept: Sequence[str] | None = None, smoothing: bool = True, alpha: float | None = None,
               calibration: Any = None, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Write Q/DQ graphs of the fp32 engine directory src_dir into out_dir; returns the manifest."""
    from export import calibration as calib
    from export.per_row_int8 import weight_matmuls
    from export.quantize import DEFAULT_FLOAT_KEPT, _excluded_nodes, check_options, gemm_to_matmul
    from export.smoothing import (apply_smoothing, choose_alpha, factors, find_groups, group_weights,
                                  inline_constant_identities)

    if kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    float_kept = tuple(DEFAULT_FLOAT_KEPT if float_kept is None else float_kept)
    check_options("int8", None, float_kept)
    src = load_engine_dir(src_dir)
    if src.precision.name != "fp32":
        raise InvalidInputError(f"{src.path}: Q/DQ graphs are made from an fp32 engine, this one is "
                                f"{src.precision.name}")
    out_dir = Path(out_dir)
    if out_dir.resolve() == src.path.resolve():
        raise InvalidInputError(f"the Q/DQ engine needs its own directory, not {src.path}")
    if isinstance(calibration, (str, Path)):
        calibration = calib.directory_set(calibration)
    cal = calibration or calib.synthetic_set()

    models, targets, groups = {}, {}, {}
    for name in GRAPH_NAMES:
        model = onnx.load(str(src.graph_path(name)))
        if name in float_kept:
            models[name], targets[name], groups[name] = model, [], []
            continue
        model = inline_constant_identities(gemm_to_matmul(model))
        excluded = _excluded_nodes(model, name, float_kept)
        models[name], targets[name] = model, weight_matmuls(model, excluded)
        groups[name] = find_groups(model, sorted(excluded)) if smoothing else []
    tensors = {name: sorted({n.input[0] for n in nodes}) for name, nodes in targets.items() if nodes}
    log(f"[qdq] calibrating {sum(len(t) for t in tensors.values())} activations on {cal.record['creatives']} "
        f"creatives ({cal.record['source']})")
    stats = calib.collect(src.path, tensors, cal)

    smoothing_block: dict[str, Any] = {}
    census: dict[str, dict[str, int]] = {}
    qtype, qmax = KINDS[kind]
    for name in GRAPH_NAMES:
        model = models[name]
        amax = {t: stats[name][t].amax.copy() for t in tensors.get(name, [])}
        if groups[name]:
            rows = {g.activation: (amax[g.activation], stats[name][g.activation].sample()) for g in groups[name]}
            chosen, errors = choose_alpha(model, groups[name], rows)
            use = alpha if alpha is not None else chosen
            if use is not None:
                scale = {g.activation: factors(rows[g.activation][0], group_weights(model, g), use)
                         for g in groups[name]}
                apply_smoothing(model, groups[name], scale)
                for act, s in scale.items():
                    amax[act] = amax[act] / s
            smoothing_block[name] = {"alpha": use, "groups": len(groups[name]) if use is not None else 0,
                                     "calibration_error": {k: float(f"{v:.4g}") for k, v in errors.items()}}
        if targets[name]:
            if kind == "fp8":  # float8 Q/DQ needs opset 19: convert first (ReduceMean's axes become an input, ...)
                from onnx import version_converter

                model = models[name] = version_converter.convert_version(model, FP8_OPSET)
            _insert_qdq(model, amax, qtype, qmax)
        ops = [n.op_type for n in model.graph.node]
        census[name] = {op: ops.count(op) for op in ("DequantizeLinear", "QuantizeLinear") if op in ops}
        log(f"[qdq] {name}: {census[name] or 'kept in float'}")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    manifest = copy.deepcopy(src.manifest)
    for name in GRAPH_NAMES:
        entry = manifest["graphs"][name]
        external = bool(entry.get("external_data"))
        for stale in (entry["file"], *entry.get("external_data", [])):
            (out_dir / stale).unlink(missing_ok=True)
        onnx.checker.check_model(models[name])
        onnx.save_model(models[name], str(out_dir / entry["file"]), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=f"{name}.onnx.data", size_threshold=1024)
        structure = onnx.load(str(out_dir / entry["file"]), load_external_data=False)
        entry["external_data"] = sorted({e.value for t in structure.graph.initializer for e in t.external_data
                                         if e.key == "location"})
        entry["sha256"] = onnx_sha256(out_dir / entry["file"])
    for name in (*manifest["files"], manifest["embeddings"]["file"]):
        shutil.copyfile(src.path / name, out_dir / name)
    manifest["precision"] = {"name": kind, "method": "c4u.smoothquant_qdq", "activation_scales": "per_tensor",
                             "block_size": None, "float_kept": list(float_kept),
                             "smoothing": smoothing_block or None, "calibration": cal.record,
                             "quantized_ops": census}
    write_manifest(out_dir, manifest)
    load_engine_dir(out_dir)  # the runtime's checks (census included) on what was just written
    return manifest


def _insert_qdq(model: onnx.ModelProto, amax: dict[str, np.ndarray], qtype: int, qmax: float) -> None:
    """Q/DQ on each weight MatMul's activation (shared per tensor) and its weight, in place."""
    from export.per_row_int8 import weight_matmuls

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    pending = {n.input[0] for n in weight_matmuls(model)} & set(amax)
    new_inits, nodes, done = [], [], {}
    for node in graph.node:
        x = node.input[0] if node.op_type == "MatMul" else None
        if x not in pending or node.input[1] not in inits:
            nodes.append(node)
            continue
        if x not in done:
            p = f"qdq{len(done)}"
            scale = np.float32(max(float(np.max(amax[x])), 1e-12) / qmax)
            new_inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{p}/scale"),
                          helper.make_tensor(f"{p}/zero", qtype, [], [0])]
            nodes += [helper.make_node("QuantizeLinear", [x, f"{p}/scale", f"{p}/zero"], [f"{p}/q"], name=f"{p}/Q"),
                      helper.make_node("DequantizeLinear", [f"{p}/q", f"{p}/scale", f"{p}/zero"], [f"{p}/dq"],
                                       name=f"{p}/DQ")]
            done[x] = f"{p}/dq"
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        col = np.abs(w).max(axis=0)
        w_scale = np.where(col > 0, col / qmax, 1.0).astype(np.float32)
        q = w / w_scale
        name = node.input[1]
        if qtype == TensorProto.INT8:
            w_q = numpy_helper.from_array(np.clip(np.rint(q), -127, 127).astype(np.int8), f"{name}_q")
        else:
            w_q = helper.make_tensor(f"{name}_q", qtype, list(w.shape), q.astype(np.float32).ravel())
        new_inits += [w_q, numpy_helper.from_array(w_scale, f"{name}_qscale"),
                      helper.make_tensor(f"{name}_qzero", qtype, [w.shape[1]], [0] * w.shape[1])]
        nodes += [helper.make_node("DequantizeLinear", [w_q.name, f"{name}_qscale", f"{name}_qzero"],
                                   [f"{name}_dq"], name=f"{node.name}/weight_DQ", axis=1),
                  helper.make_node("MatMul", [done[x], f"{name}_dq"], list(node.output), name=node.name)]
    replace_nodes(graph, nodes, new_inits)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt_qdq", description=__doc__.splitlines()[0])
    parser.add_argument("engine_dir", help="an fp32 engine directory (python -m export CKPT)")
    parser.add_argument("--out", required=True, help="directory to write the Q/DQ engine into")
    parser.add_argument("--kind", choices=list(KINDS), default="int8")
    parser.add_argument("--calibration", metavar="DIR", help="your own creatives (default: the synthetic set)")
    parser.add_argument("--alpha", type=float, help="SmoothQuant's alpha (default: chosen per graph)")
    parser.add_argument("--no-smoothing", action="store_true")
    args = parser.parse_args(argv)
    try:
        qdq_engine(args.engine_dir, args.out, args.kind, smoothing=not args.no_smoothing, alpha=args.alpha,
                   calibration=args.calibration)
    except C4UError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Q/DQ engine directory: {args.out} (check it: python -m export.check_tensorrt {args.out} --precision "
          f"{args.kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
