"""SmoothQuant (Xiao et al. 2023) on an fp32 ONNX graph: outlier activation channels moved into the weights.

A MatMul group (the weight MatMuls reading one activation X, e.g. q, k, v) computes X @ W = (X / s) @ (s W) for any
per-channel s > 0. Choosing s_k = max|X_k|^alpha / max|W_k|^(1 - alpha) flattens X's outlier channels (the few
channels 10-100x the rest that real LLMs carry) so one int8 scale per row fits them all, and the weights, quantized
per output channel, absorb the difference. The division by s is folded into whatever produces X, so the float
graph computes the same function at the same cost (only float rounding differs; tests hold it):
- "norm":   X = Mul(gamma, normalized) with gamma a constant (an RMSNorm's weight): gamma / s;
            also through a GatherElements that picks rows (the decoder's lm_head reads the last positions);
- "linear": X = Mul(a, Y) with Y = MatMul(Z, W_up) [+ b] read only there (the MLP's down_proj input
            act(gate) * up): W_up's columns and b divided by s.
MatMuls whose input has neither producer (attention outputs into o_proj / the vision proj, the merger) are not
smoothed: per-row int8 alone. Factors come from a calibration set (export/calibration.py); alpha is chosen per
graph by the summed relative output error of the group's int8 products on calibration rows (choose_alpha).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from export.graph_edit import drop_unused_initializers
from export.per_row_int8 import quantize_weight, weight_matmuls

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_FACTOR = 1e-5


@dataclass(frozen=True)
class SmoothGroup:
    """The weight MatMuls reading one activation, and where X's division by s folds."""

    activation: str  # the tensor the MatMuls read (a graph value name)
    matmuls: tuple[str, ...]  # node names
    fold: str  # "norm" | "linear"
    fold_node: str  # the norm's Mul node, or the producing MatMul node
    fold_bias: str | None = None  # "linear": the Add node of the producer's bias, if any


def inline_constant_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace Identity(initializer) outputs by the initializer itself, in place. torch.onnx.export keeps one copy of
    equal weights (a random checkpoint's RMSNorm weights are all ones) and feeds the others through Identity
    nodes; smoothing gives each norm its own weight, so each needs to see a constant. Exact."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    if not alias:
        return model
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    return model


def find_groups(model: onnx.ModelProto, excluded: Sequence[str] = ()) -> list[SmoothGroup]:
    """The smoothable groups among the graph's weight MatMuls outside `excluded` (run inline_constant_identities
    first: a weight reached through an Identity is not seen as a constant)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}

    def only_read_by(tensor: str, nodes: list[onnx.NodeProto]) -> bool:
        """Whether the values of `tensor` reach nothing but `nodes` (Shape reads only its shape: allowed)."""
        readers = {id(n) for n in consumers.get(tensor, []) if n.op_type != "Shape"}
        return tensor not in outputs and readers == {id(n) for n in nodes}

    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in weight_matmuls(model, excluded):
        by_input.setdefault(node.input[0], []).append(node)
    groups = []
    for x, users in by_input.items():
        if not only_read_by(x, users):
            continue
        node = producer.get(x)
        while node is not None and node.op_type == "GatherElements" and _axis(node) == 1 \
                and only_read_by(node.input[0], [node]):
            node = producer.get(node.input[0])  # picks positions of [B, S, K]: channels kept
        if node is None or node.op_type != "Mul":
            continue
        names = tuple(u.name for u in users)
        gamma = [i for i in node.input if i in inits]
        if len(gamma) == 1 and _numel(graph, gamma[0]) == _k(graph, users[0]):
            groups.append(SmoothGroup(x, names, "norm", node.name))
            continue
        for y in node.input:
            fold = _linear_producer(y, producer, inits, only_read_by, node)
            if fold is not None:
                groups.append(SmoothGroup(x, names, "linear", *fold))
                break
    return groups


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def _numel(graph: onnx.GraphProto, name: str) -> int:
    t = next(t for t in graph.initializer if t.name == name)
    return int(np.prod(t.dims)) if len(t.dims) == 1 else -1


def _k(graph: onnx.GraphProto, node: onnx.NodeProto) -> int:
    return int(next(t for t in graph.initializer if t.name == node.input[1]).dims[0])


def _linear_producer(y, producer, inits, only_read_by, mul) -> tuple[str, str | None] | None:
    """(MatMul node, bias Add node or None) when y = MatMul(z, W) [+ b] is read by `mul` alone."""
    node = producer.get(y)
    if node is None or not only_read_by(y, [mul]):
        return None
    bias = None
    if node.op_type == "Add":
        const = [i for i in node.input if i in inits]
        other = [i for i in node.input if i not in inits]
        if len(const) != 1 or len(other) != 1 or not only_read_by(other[0], [node]):
            return None
        bias, node = node.name, producer.get(other[0])
    if node is not None and node.op_type == "MatMul" and node.input[1] in inits:
        return node.name, bias
    return None


def group_weights(model: onnx.ModelProto, group: SmoothGroup) -> list[np.ndarray]:
    """The [K, N] weights of the group's MatMuls."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return [numpy_helper.to_array(inits[nodes[m].input[1]]) for m in group.matmuls]


def factors(act_max: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's s_k = max|X_k|^alpha / max|W_k|^(1 - alpha), 1 where a channel is all zero."""
    w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    a = np.asarray(act_max, np.float64)
    s = np.where((a > 0) & (w_max > 0), a ** alpha / np.maximum(w_max, 1e-30) ** (1 - alpha), 1.0)
    return np.clip(s, MIN_FACTOR, 1 / MIN_FACTOR).astype(np.float32)


def int8_error(rows: np.ndarray, weights: Sequence[np.ndarray], s: np.ndarray | None) -> float:
    """Summed relative squared error of per-row int8 x per-channel int8 products against float, on sample rows."""
    x = np.asarray(rows, np.float32)
    if s is not None:
        x = x / s
    amax = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12) / 127
    xq = np.rint(x / amax) * amax
    err = 0.0
    for w in weights:
        ref = rows @ w
        w_s = w if s is None else w * s[:, None]
        q, scale = quantize_weight(w_s)
        got = xq @ (q.astype(np.float32) * scale)
        err += float(np.sum((got - ref) ** 2) / max(np.sum(ref ** 2), 1e-30))
    return err


def choose_alpha(model: onnx.ModelProto, groups: Sequence[SmoothGroup],
                 stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 alphas: Sequence[float] = ALPHAS) -> tuple[float | None, dict[str, float]]:
    """The alpha with the least summed int8 error over the groups (None: smoothing does not help), and every
    candidate's error ("none" for no smoothing). stats: activation -> (per-channel max |x|, sample rows)."""
    weights = {g.activation: group_weights(model, g) for g in groups}
    errors = {"none": sum(int8_error(stats[g.activation][1], weights[g.activation], None) for g in groups)}
    for alpha in alphas:
        errors[f"{alpha:g}"] = sum(
            int8_error(stats[g.activation][1], weights[g.activation],
                       factors(stats[g.activation][0], weights[g.activation], alpha)) for g in groups)
    best = min(errors, key=errors.get)
    return (None if best == "none" else float(best)), errors


def apply_smoothing(model: onnx.ModelProto, groups: Sequence[SmoothGroup],
                    scale: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """Fold each group's factors (scale[activation], [K]) into its MatMul weights (rows times s) and into the
    activation's producer (divided by s), in place. Every touched initializer is replaced by a new one, so a
    weight shared with an untouched node keeps its value there."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    def rewrite(node: onnx.NodeProto, index: int, fn) -> None:
        old = node.input[index]
        value = fn(numpy_helper.to_array(inits[old]).astype(np.float32))
        new = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), f"{old}__smooth_{node.name}")
        graph.initializer.append(new)
        inits[new.name] = new
        node.input[index] = new.name

    for g in groups:
        s = np.asarray(scale[g.activation], np.float32)
        for m in g.matmuls:
            rewrite(nodes[m], 1, lambda w: w * s[:, None])
        fold = nodes[g.fold_node]
        if g.fold == "norm":
            index = next(i for i, name in enumerate(fold.input) if name in inits)
            rewrite(fold, index, lambda gamma: gamma / s)
        else:
            rewrite(fold, 1, lambda w: w / s[None, :])
            if g.fold_bias is not None:
                add = nodes[g.fold_bias]
                index = next(i for i, name in enumerate(add.input) if name in inits)
                rewrite(add, index, lambda b: b / s)
    drop_unused_initializers(graph)
    return model
