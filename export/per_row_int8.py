"""Per-row int8: every weight MatMul of a float graph as int8 x int8 with one activation scale per row (token).

    x [..., K] -> x2 = Reshape(x, [-1, K])
               -> scale = max(|x2| over K, eps) / 127                       one scale per row: [M]
               -> q = QuantizeLinear(x2, scale, zero point 128, axis=0)     uint8, symmetric around 128
               -> y2 = MatMulIntegerToFloat(q, W_int8, 1, w_scale, 128, 0)  w_scale per output channel: [N]
               -> y = Reshape(y2 * scale[:, None], [..., N])

A row's integers depend only on that row (integer products are exact), so a request's numbers never depend on what
shares its batch: batch-invariant up to float rounding of the unquantized parts, unlike onnxruntime's dynamic
quantization (DynamicQuantizeLinear: one scale for the whole batch tensor). The activation is quantized once per
input tensor and shared by every MatMul that reads it (q, k, v; gate, up).

Why these operators (benchmarks/bench_per_row_int8.py measures the options on this machine): onnxruntime's CPU
kernels for int8 activations (s8 x s8) have no fast path here (0.3x fp32 on a 2128 x 512 x 1536 product); u8 x s8
with a scalar zero point of 128 is the VNNI path. QuantizeLinear with a per-axis scale does divide, round
(half to even), shift and saturate in one op; MatMulIntegerToFloat (com.microsoft) fuses the int32 -> float cast
and the per-column weight scales into the product; its activation scale must be a scalar, so the row scale is one
Mul on the output. Weights are symmetric per output channel (zero point 0); a zero column gets scale 1.
On CPUs without VNNI (AVX2 only), onnxruntime's u8 x s8 kernel can saturate int16 sums (its quantizers'
reduce_range exists for this); this path assumes VNNI or AVX512-BW, as the machines in BENCHMARKS.md have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.graph_edit import replace_nodes

MS_DOMAIN = "com.microsoft"
ROW_EPS = 1e-12  # an all-zero row quantizes to zeros with a tiny, finite scale


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel of a [K, N] weight: (int8 [K, N], float32 scale [N])."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def weight_matmuls(model: onnx.ModelProto, excluded: Iterable[str] = ()) -> list[onnx.NodeProto]:
    """The MatMul nodes whose second input is a constant 2-D float weight, outside `excluded` (node names)."""
    excluded = set(excluded)
    weights = {t.name: t for t in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type == "MatMul" and n.name not in excluded and n.input[1] in weights
            and len(weights[n.input[1]].dims) == 2 and weights[n.input[1]].data_type == TensorProto.FLOAT]


def outlier_columns(act_max: np.ndarray, threshold: float = 6.0) -> np.ndarray:
    """LLM.int8-style outlier channels, static: those whose calibration max |x| is at least `threshold` times the
    median channel's (sorted indices; empty when none stands out)."""
    a = np.asarray(act_max, np.float64)
    return np.flatnonzero(a >= threshold * max(float(np.median(a)), 1e-30)).astype(np.int64)


def quantize_per_row(model: onnx.ModelProto, excluded: Iterable[str] = (),
                     float_columns: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Rewrite `model` (in place, returned) so each weight MatMul not in `excluded` runs per-row int8.

    float_columns: activation tensor -> input channels kept in float (LLM.int8(), Dettmers et al. 2022, with the
    outlier channels fixed from calibration instead of found per call): those channels are zeroed before the row
    scale is taken and their rows of W go through a float MatMul of the gathered channels, added to the product."""
    float_columns = {x: np.asarray(c, np.int64) for x, c in (float_columns or {}).items() if len(c)}
    graph = model.graph
    targets = weight_matmuls(model, excluded)
    if not targets:
        return model
    weights = {t.name: t for t in graph.initializer}
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in targets:
        by_input.setdefault(node.input[0], []).append(node)
    replaced = {id(n) for n in targets}
    consts = [numpy_helper.from_array(np.array(v, dtype=dt), name) for name, v, dt in (
        ("rowq/eps", ROW_EPS, np.float32), ("rowq/inv127", 1 / 127, np.float32), ("rowq/one", 1.0, np.float32),
        ("rowq/zp128", 128, np.uint8), ("rowq/axis1", [1], np.int64), ("rowq/last", [-1], np.int64))]
    new_inits = list(consts)
    emitted: dict[str, list[onnx.NodeProto]] = {}  # input tensor -> its quantization nodes (placed before 1st use)
    nodes: list[onnx.NodeProto] = []
    for g, (x, users) in enumerate(by_input.items()):
        k = weights[users[0].input[1]].dims[0]
        p = f"rowq{g}"
        k_shape = numpy_helper.from_array(np.array([-1, k], np.int64), f"{p}/k_shape")
        new_inits.append(k_shape)
        split = []
        if x in float_columns:  # the outlier channels leave the int8 path for a float one
            mask = np.ones(k, np.float32)
            mask[float_columns[x]] = 0
            new_inits += [numpy_helper.from_array(mask, f"{p}/inlier_mask"),
                          numpy_helper.from_array(float_columns[x], f"{p}/outlier_index")]
            split = [helper.make_node("Mul", [x, f"{p}/inlier_mask"], [f"{p}/inliers"], name=f"{p}/Inliers"),
                     helper.make_node("Gather", [x, f"{p}/outlier_index"], [f"{p}/outliers"], name=f"{p}/Outliers",
                                      axis=-1)]
        emitted[x] = split + [
            helper.make_node("Reshape", [f"{p}/inliers" if split else x, k_shape.name], [f"{p}/x2"],
                             name=f"{p}/Reshape"),
            helper.make_node("Shape", [x], [f"{p}/lead"], name=f"{p}/Shape", end=-1),
            helper.make_node("Abs", [f"{p}/x2"], [f"{p}/abs"], name=f"{p}/Abs"),
            helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/amax"], name=f"{p}/ReduceMax", axes=[1], keepdims=0),
            helper.make_node("Max", [f"{p}/amax", "rowq/eps"], [f"{p}/amax_eps"], name=f"{p}/Max"),
            helper.make_node("Mul", [f"{p}/amax_eps", "rowq/inv127"], [f"{p}/scale"], name=f"{p}/Scale"),
            helper.make_node("Shape", [f"{p}/scale"], [f"{p}/rows"], name=f"{p}/Rows"),
            helper.make_node("Expand", ["rowq/zp128", f"{p}/rows"], [f"{p}/zp"], name=f"{p}/ZeroPoints"),
            helper.make_node("QuantizeLinear", [f"{p}/x2", f"{p}/scale", f"{p}/zp"], [f"{p}/q"], name=f"{p}/Quantize",
                             axis=0),
            helper.make_node("Unsqueeze", [f"{p}/scale", "rowq/axis1"], [f"{p}/row_scale"], name=f"{p}/RowScale"),
        ]
    for node in graph.node:
        if id(node) not in replaced:
            nodes.append(node)
            continue
        x = node.input[0]
        if x in emitted:
            nodes.extend(emitted.pop(x))
        g = list(by_input).index(x)
        p, w = f"rowq{g}", numpy_helper.to_array(weights[node.input[1]])
        cols = float_columns.get(x)
        if cols is not None:
            w_float = np.ascontiguousarray(w[cols])
            w = w.copy()
            w[cols] = 0  # those rows go float: they must not set the column scales
        q, scale = quantize_weight(w)
        base = node.name or node.output[0]
        wq = numpy_helper.from_array(q, f"{node.input[1]}_int8")
        ws = numpy_helper.from_array(scale, f"{node.input[1]}_scale")
        wz = numpy_helper.from_array(np.zeros(q.shape[1], np.int8), f"{node.input[1]}_zero_point")
        n_shape = numpy_helper.from_array(np.array([q.shape[1]], np.int64), f"{node.input[1]}_n")
        new_inits += [wq, ws, wz, n_shape]
        nodes += [
            helper.make_node("MatMulIntegerToFloat", [f"{p}/q", wq.name, "rowq/one", ws.name, "rowq/zp128", wz.name],
                             [f"{base}/y2"], name=f"{base}/MatMulIntegerToFloat", domain=MS_DOMAIN),
            helper.make_node("Mul", [f"{base}/y2", f"{p}/row_scale"], [f"{base}/y2s"], name=f"{base}/RowScale"),
            helper.make_node("Concat", [f"{p}/lead", n_shape.name], [f"{base}/shape"], name=f"{base}/Shape", axis=0),
            helper.make_node("Reshape", [f"{base}/y2s", f"{base}/shape"],
                             [node.output[0] if cols is None else f"{base}/y_int8"], name=f"{base}/Reshape"),
        ]
        if cols is not None:
            wf = numpy_helper.from_array(w_float, f"{node.input[1]}_outlier_rows")
            new_inits.append(wf)
            nodes += [helper.make_node("MatMul", [f"{p}/outliers", wf.name], [f"{base}/y_float"],
                                       name=f"{base}/OutlierMatMul"),
                      helper.make_node("Add", [f"{base}/y_int8", f"{base}/y_float"], [node.output[0]],
                                       name=f"{base}/AddOutliers")]
    replace_nodes(graph, nodes, new_inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model
