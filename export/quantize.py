"""Quantized engines: an fp32 engine directory's graphs, quantized, into a new directory.

    python -m export CKPT --precision int8            # -> CKPT/onnx-int8/   (--calibration DIR: your creatives)
    python -m export CKPT --precision int4 --block-size 32

int8 (the default method, "per_row"): every weight MatMul as int8 x int8 with one activation scale per row (token)
and one weight scale per output channel (export/per_row_int8.py), so a request's numbers never depend on its
batch; before that, SmoothQuant (export/smoothing.py) moves outlier activation channels into the weights, folded
into the preceding RMSNorm weights (or the producing up projection), with factors from a calibration set
(export/calibration.py: the package's synthetic creatives and profiles unless `calibration` names a directory of
the user's creatives) and alpha chosen per graph on it. The float graph computes the same function after
smoothing. activation_scales="per_tensor" is onnxruntime's quantize_dynamic (one scale per batch tensor; results
depend on batch composition), kept for comparison (BENCHMARKS.md, "Precision on any checkpoint").
int4: MatMulNBitsQuantizer (weight-only, symmetric blocks of `block_size` along K, accuracy_level 4 = int8
activations inside the kernel, per row block). onnxruntime's int4 quantizer needs onnx-ir.

What stays in float (FLOAT_UNITS; the default measured by benchmarks/bench_precision.py on the built-in model):
the embedding table (a numpy lookup outside the graphs, never quantized), norms, rotary and attention-score MatMuls
(no constant weight: the quantizers leave them alone), and the vision tower's first and last layers (patch
embedding, merger). Gemm nodes (the vision tower's nn.Linear over 2-D patches) are rewritten as MatMul + Add before
quantizing, since the quantizers only take MatMul; the rewrite is exact (tested).

The manifest records the precision block (c4u_engine/runners/precision.py): method, activation scales, block size,
the float-kept units, the smoothing (alpha per graph, how many groups, each candidate's calibration error), the
calibration set (source, how many creatives and groups) and the census of quantization operators per graph, which
the runtime checks against the graph files.
"""

from __future__ import annotations

import copy
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from c4u_engine.errors import BackendUnavailableError, InvalidInputError
from c4u_engine.runners.engine_dir import GRAPH_NAMES, MANIFEST_FILE, load_engine_dir
from c4u_engine.runners.precision import QUANT_OPS, QUANTIZED, PrecisionEntry

from export.build_tensorrt import onnx_sha256
from export.calibration import CalibrationSet
from export.graph_edit import replace_nodes
from export.manifest import write_manifest
from export.per_row_int8 import quantize_per_row

ACTIVATION_SCALES = ("per_row", "per_tensor")
METHODS = {"per_row": "c4u.per_row_int8", "per_tensor": "onnxruntime.quantize_dynamic",
           "int4": "onnxruntime.MatMulNBitsQuantizer"}
INT4_BLOCK_SIZES = (32, 64, 128)
DEFAULT_INT4_BLOCK = 32


def _in_layers(name: str) -> bool:
    return "/layers." in name


# Units that can be kept in float, by name: (graph, predicate on a node's name). A node outside every kept unit
# is quantized when it is a MatMul with a constant weight.
FLOAT_UNITS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "vision": ("vision", lambda name: True),
    "vision.patch_embed": ("vision", lambda name: "/patch_embed/" in name),  # the tower's first layer
    "vision.merger": ("vision", lambda name: "/merger/" in name),  # its last: the projection into the text space
    "lm_head": ("decoder", lambda name: not _in_layers(name)),  # the only weight MatMul outside the layers
    "decoder.first_layer": ("decoder", lambda name: "/layers.0/" in name),
}
DEFAULT_FLOAT_KEPT = ("vision.patch_embed", "vision.merger")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quantize_engine(src_dir: str | Path, out_dir: str | Path, precision: str, *, block_size: int | None = None,
                    float_kept: Sequence[str] = DEFAULT_FLOAT_KEPT, activation_scales: str | None = None,
                    smoothing: bool | None = None, alpha: float | None = None,
                    calibration: str | Path | CalibrationSet | None = None, float_columns: bool = False,
                    log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Write a `precision` (int8 | int4) copy of the fp32 engine directory src_dir into out_dir; returns the
    manifest. The source is loaded and checked first (hashes included); out_dir's manifest is written last.

    int8 only: activation_scales "per_row" (default) | "per_tensor"; smoothing (default True): SmoothQuant with
    alpha (default: chosen per graph on the calibration set); calibration: None (the synthetic set), a directory
    of creatives, or a CalibrationSet; float_columns (per_row only): LLM.int8-style, the input channels whose
    calibration max is >= 6x the median channel's stay float (measured beside smoothing in BENCHMARKS.md)."""
    block_size = check_options(precision, block_size, float_kept)
    activation_scales, smoothing = check_int8_options(precision, activation_scales, smoothing, alpha,
                                                      None if float_columns else calibration)
    if float_columns and activation_scales != "per_row":
        raise InvalidInputError("float_columns (LLM.int8-style outlier channels in float) needs int8 per_row")
    src = load_engine_dir(src_dir)
    if src.precision.name != "fp32":
        raise InvalidInputError(f"{src.path}: quantizing needs an fp32 engine, this one is {src.precision.name}")
    if not src.batch_invariant:  # allowed (old exports), but its results will move with batch composition
        log(f"[quantize] note: {src.path} was exported without batch-invariant attention; the {precision} engine's "
            "results can move (by ~1e-3 in P(A)) with what shares a batch. Export with --batch-invariant (the "
            "default of c4u export --precision int8) for results that never do.")
    src_dir, out_dir = src.path, Path(out_dir)
    if out_dir.resolve() == src_dir.resolve():
        raise InvalidInputError(f"the quantized engine needs its own directory, not {src_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    manifest = copy.deepcopy(src.manifest)  # the checked source manifest, rewritten for the new engine

    models: dict[str, onnx.ModelProto] = {}
    excluded: dict[str, set[str]] = {}
    for name in GRAPH_NAMES:
        model = onnx.load(str(src_dir / manifest["graphs"][name]["file"]))
        if name not in float_kept and _weight_matmuls(model, _excluded_nodes(model, name, float_kept)):
            model = gemm_to_matmul(model)
            excluded[name] = _excluded_nodes(model, name, float_kept)
        models[name] = model
    smoothed, calibration_record, columns, columns_block = {}, None, {}, None
    if (smoothing or float_columns) and excluded:
        t0 = time.perf_counter()
        smoothed, calibration_record, columns, columns_block = smooth_graphs(
            src_dir, models, excluded, alpha, calibration, log, smoothing=smoothing, float_columns=float_columns)
        log(f"[quantize] calibration in {time.perf_counter() - t0:.1f} s")

    census: dict[str, dict[str, int]] = {}
    for name in GRAPH_NAMES:
        entry = manifest["graphs"][name]
        for stale in (entry["file"], *entry.get("external_data", [])):
            (out_dir / stale).unlink(missing_ok=True)
        model = models[name]
        t0 = time.perf_counter()
        if name in excluded:
            model = _quantize(model, precision, block_size, excluded[name], activation_scales, columns.get(name))
            log(f"[quantize] {name}: {precision} in {time.perf_counter() - t0:.1f} s "
                f"({len(excluded[name])} weight MatMul(s) kept in float)")
        else:
            log(f"[quantize] {name}: kept in float")
        census[name] = _quant_census(model)
        external = bool(entry.get("external_data"))
        data_name = f"{name}.onnx.data"
        onnx.save_model(model, str(out_dir / entry["file"]), save_as_external_data=external,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        structure = onnx.load(str(out_dir / entry["file"]), load_external_data=False)
        entry["external_data"] = sorted({e.value for t in structure.graph.initializer for e in t.external_data
                                         if e.key == "location"})
        entry["sha256"] = onnx_sha256(out_dir / entry["file"])

    for name in (*manifest["files"], manifest["embeddings"]["file"]):
        shutil.copyfile(src_dir / name, out_dir / name)
    entry = PrecisionEntry(precision, METHODS[activation_scales if precision == "int8" else "int4"], block_size,
                           tuple(float_kept), census, activation_scales=activation_scales,
                           smoothing=smoothed or None, calibration=calibration_record)
    manifest["precision"] = entry.to_json()
    if columns_block is not None:
        manifest["precision"]["float_columns"] = columns_block
    manifest["exporter"] = {**manifest.get("exporter", {}), "onnxruntime": _ort_version()}
    write_manifest(out_dir, manifest)
    load_engine_dir(out_dir)  # the runtime's own checks on what was just written
    return manifest


def check_options(precision: str, block_size: int | None, float_kept: Sequence[str]) -> int | None:
    """InvalidInputError for options quantize_engine cannot take (checked before minutes of export); returns the
    block size to use (int4's default when None)."""
    if precision not in QUANTIZED:
        raise InvalidInputError(f"quantize_engine makes {' or '.join(QUANTIZED)} engines, not {precision!r}")
    if precision == "int4":
        block_size = DEFAULT_INT4_BLOCK if block_size is None else block_size
        if block_size not in INT4_BLOCK_SIZES:
            raise InvalidInputError(f"int4 block_size must be one of {INT4_BLOCK_SIZES}, got {block_size!r}")
    elif block_size is not None:
        raise InvalidInputError("block_size applies to int4 only (int8 is per channel)")
    unknown = [u for u in float_kept if u not in FLOAT_UNITS]
    if unknown:
        raise InvalidInputError(f"unknown float-kept unit(s) {unknown}; valid: {sorted(FLOAT_UNITS)}")
    return block_size


def check_int8_options(precision: str, activation_scales: str | None, smoothing: bool | None, alpha: float | None,
                       calibration: Any) -> tuple[str | None, bool]:
    """InvalidInputError for int8 options given to int4 or out of range; returns (activation_scales, smoothing)
    with their defaults filled in (per_row and smoothing on for int8; None and off for int4)."""
    if precision != "int8":
        if activation_scales is not None or smoothing or alpha is not None or calibration is not None:
            raise InvalidInputError("activation scales, smoothing, alpha and calibration apply to int8 only "
                                    "(int4 is weight-only)")
        return None, False
    activation_scales = activation_scales or "per_row"
    if activation_scales not in ACTIVATION_SCALES:
        raise InvalidInputError(f"activation_scales must be one of {ACTIVATION_SCALES}, got {activation_scales!r}")
    smoothing = True if smoothing is None else bool(smoothing)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1):
        raise InvalidInputError(f"the smoothing alpha must be a number in (0, 1), got {alpha!r}")
    if not smoothing and (alpha is not None or calibration is not None):
        raise InvalidInputError("alpha and calibration apply only with smoothing on")
    return activation_scales, smoothing


def smooth_graphs(src_dir: Path, models: dict[str, onnx.ModelProto], excluded: dict[str, set[str]],
                  alpha: float | None, calibration: Any, log: Callable[[str], None], *, smoothing: bool = True,
                  float_columns: bool = False) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """SmoothQuant on the graphs about to be quantized (in place): calibrate on the fp32 engine at src_dir, choose
    alpha per graph (unless given), fold the factors; with float_columns, also pick each quantized MatMul input's
    outlier channels (after smoothing). Returns (the manifest's smoothing block, calibration block, graph ->
    activation -> float channel indices, the manifest's float_columns block or None)."""
    from export.per_row_int8 import outlier_columns, weight_matmuls
    from export import calibration as calib
    from export.smoothing import (apply_smoothing, choose_alpha, factors, find_groups, group_weights,
                                  inline_constant_identities)

    groups = {name: find_groups(inline_constant_identities(models[name]), sorted(excluded[name])) if smoothing
              else [] for name in excluded}
    inputs = {name: sorted({n.input[0] for n in weight_matmuls(models[name], excluded[name])}) if float_columns
              else [g.activation for g in groups[name]] for name in excluded}
    if isinstance(calibration, calib.CalibrationSet):
        cal = calibration
    else:
        cal = calib.directory_set(calibration) if calibration is not None else calib.synthetic_set()
    log(f"[quantize] calibrating on {cal.record['creatives']} creatives ({cal.record['source']}), "
        f"{sum(len(g) for g in groups.values())} smoothing groups")
    stats = calib.collect(src_dir, {n: t for n, t in inputs.items() if t}, cal)
    block: dict[str, Any] = {}
    columns: dict[str, dict[str, Any]] = {}
    for name, gs in groups.items():
        amax = {t: stats[name][t].amax.copy() for t in inputs[name]}
        if float_columns:
            columns[name] = {t: outlier_columns(amax[t]) for t in inputs[name]}
        if not gs:
            continue
        rows = {g.activation: (stats[name][g.activation].amax, stats[name][g.activation].sample()) for g in gs}
        chosen, errors = choose_alpha(models[name], gs, rows)
        use = alpha if alpha is not None else chosen
        if use is not None:
            scale = {g.activation: factors(rows[g.activation][0], group_weights(models[name], g), use) for g in gs}
            apply_smoothing(models[name], gs, scale)
            if float_columns:  # the outliers that remain after smoothing
                columns[name].update({a: outlier_columns(amax[a] / s) for a, s in scale.items()})
        block[name] = {"alpha": use, "alpha_chosen_by": "given" if alpha is not None else "calibration error",
                       "groups": len(gs) if use is not None else 0,
                       "calibration_error": {k: float(f"{v:.4g}") for k, v in errors.items()}}
        log(f"[quantize] {name}: smoothing alpha {use} over {len(gs)} groups "
            f"(errors {block[name]['calibration_error']})")
    columns_block = None if not float_columns else {
        name: {"threshold": 6.0, "activations": sum(bool(len(c)) for c in cols.values()),
               "channels": int(sum(len(c) for c in cols.values()))} for name, cols in columns.items()}
    return block, cal.record, columns, columns_block


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(x, W, b) with a constant W, alpha = beta = 1 and no transA as MatMul(x, W') + b (W' = W or
    W^T per transB), so the MatMul quantizers see the vision tower's linear layers. Exact: same math, same order."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        w = np.ascontiguousarray(w.T) if attrs.get("transB", 0) else w
        w_name = f"{node.input[1]}__matmul"
        graph.initializer.append(numpy_helper.from_array(w, w_name))
        biased = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}__matmul" if biased else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [product], name=f"{node.name}__matmul"))
        if biased:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}__bias"))
    replace_nodes(graph, nodes)
    return model


def _weight_matmuls(model: onnx.ModelProto, excluded: set[str]) -> list[str]:
    """Names of the MatMul / Gemm nodes with a constant weight that are not kept in float."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights and n.name not in excluded]


def _excluded_nodes(model: onnx.ModelProto, graph: str, float_kept: Sequence[str]) -> set[str]:
    rules = [FLOAT_UNITS[u][1] for u in float_kept if FLOAT_UNITS[u][0] == graph]
    return {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and any(r(n.name) for r in rules)}


def _quantize(model: onnx.ModelProto, precision: str, block_size: int | None, excluded: set[str],
              activation_scales: str | None, float_columns: dict[str, Any] | None = None) -> onnx.ModelProto:
    if precision == "int8" and activation_scales == "per_row":
        return quantize_per_row(model, excluded, float_columns)
    logging.disable(logging.WARNING)  # the quantizers log advice ("run pre-processing first") on the root logger
    try:
        return _run_quantizer(model, precision, block_size, excluded)
    finally:
        logging.disable(logging.NOTSET)


def _run_quantizer(model: onnx.ModelProto, precision: str, block_size: int | None, excluded: set[str]
                   ) -> onnx.ModelProto:
    if precision == "int8":  # activation_scales="per_tensor"
        import tempfile

        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q.onnx"
            quantize_dynamic(model, out, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=False,
                             weight_type=QuantType.QInt8, nodes_to_exclude=sorted(excluded),
                             extra_options={"MatMulConstBOnly": True})
            return onnx.load(str(out))
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                     MatMulNBitsQuantizer)
    except ImportError as exc:  # onnx-ir missing is the usual cause
        raise BackendUnavailableError(f"the int4 quantizer needs onnxruntime's matmul_nbits_quantizer and onnx-ir: "
                                      f"pip install onnx-ir ({exc})") from exc
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=sorted(excluded), algo_config=config)
    quantizer.process()
    return quantizer.model.model


def _quant_census(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in QUANT_OPS)
    return dict(sorted(counts.items()))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def check_quantizable(precision: str) -> None:
    """BackendUnavailableError now (before a long export) if this environment cannot make `precision`."""
    if precision == "int4":
        try:
            import onnx_ir  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError("the int4 quantizer (onnxruntime MatMulNBitsQuantizer) needs onnx-ir: "
                                          "pip install onnx-ir") from exc
    if precision in QUANTIZED:
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError(f"quantizing needs onnxruntime.quantization ({exc})") from exc
