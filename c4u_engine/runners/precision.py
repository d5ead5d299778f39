"""Precisions of an engine: names, the manifest's "precision" block, and the check that the graphs really have it.

    fp32 / fp16 / bf16   every weight and activation in that float type (the manifest's "dtype")
    int8                 MatMul weights int8 per output channel, activations quantized on the fly: one scale per
                         row (token), "per_row" (QuantizeLinear per axis + MatMulIntegerToFloat: a request's
                         numbers do not depend on its batch), after SmoothQuant smoothing; or one scale per batch
                         tensor, "per_tensor" (onnxruntime's DynamicQuantizeLinear + MatMulInteger); float I/O
    int4                 MatMul weights int4 in blocks of `block_size` with a float scale per block
                         (onnxruntime's MatMulNBits, weight-only); float activations and I/O

Manifest block (written by export/quantize.py; absent in engines exported before it = the dtype's float precision)::

    "precision": {"name": "int8", "method": "c4u.per_row_int8", "activation_scales": "per_row", "block_size": null,
                  "float_kept": ["vision.patch_embed", "vision.merger"],
                  "smoothing": {"decoder": {"alpha": 0.5, "groups": 9, ...}, "vision": {...}},
                  "calibration": {"source": "synthetic", "creatives": 32, "groups": 8, ...},
                  "quantized_ops": {"decoder": {"MatMulIntegerToFloat": 29, "QuantizeLinear": 17}, "vision": {...}}}

activation_scales, smoothing and calibration are absent in engines written before them (per-tensor int8 then).

`quantized_ops` is the census of quantization operators per graph. load_engine_dir() counts them in the graph files
(runners/onnx_ops.py) and refuses an engine directory whose manifest claims a precision its graphs do not have:
a float engine with quantized operators, an int8 claim over float graphs, counts that differ from the claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from c4u_engine.errors import EngineArtifactError, InvalidInputError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # precision -> the manifest's dtype
QUANTIZED = ("int8", "int4")
# Precisions a manifest may declare: the runtime ones, and fp8, which only TensorRT builds run (explicit Q/DQ
# graphs from export/tensorrt_qdq.py; int8 Q/DQ graphs declare "int8" with method "c4u.smoothquant_qdq").
MANIFEST_PRECISIONS = (*PRECISIONS, "fp8")
_ALIASES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "fp16": "fp16", "float16": "fp16", "half": "fp16",
            "bf16": "bf16", "bfloat16": "bf16", "int8": "int8", "int4": "int4"}
# The operators that carry a quantized precision, by precision (what a graph of it must contain at least one of).
MARKER_OPS = {"int8": ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                       "DequantizeLinear"),
              "int4": ("MatMulNBits",), "fp8": ("DequantizeLinear",)}
ACTIVATION_SCALES = ("per_row", "per_tensor")
# Every quantization operator onnxruntime's quantizers emit: none may appear in a float engine's graphs.
QUANT_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DynamicQuantizeMatMul",
                       "MatMulIntegerToFloat",
                       "MatMulNBits", "QuantizeLinear", "DequantizeLinear", "ConvInteger", "QLinearConv", "QGemm",
                       "QAttention", "GatherBlockQuantized"})


def normalize_precision(value: Any) -> str:
    """The canonical precision name for `value` ("bfloat16" -> "bf16"); InvalidInputError naming the valid ones."""
    name = _ALIASES.get(str(value).lower()) if isinstance(value, str) else None
    if name is None:
        raise InvalidInputError(f"unknown precision {value!r}; valid precisions: {', '.join(PRECISIONS)}")
    return name


def activation_dtype(precision: str) -> str:
    """The manifest dtype of an engine of this precision: its float type, float32 for int8/int4 (float I/O)."""
    return FLOAT_DTYPES.get(precision, "float32")


@dataclass(frozen=True)
class PrecisionEntry:
    """The manifest's precision block, parsed."""

    name: str
    method: str | None = None
    block_size: int | None = None
    float_kept: tuple[str, ...] = ()
    quantized_ops: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    activation_scales: str | None = None  # int8: "per_row" | "per_tensor"
    smoothing: Mapping[str, Any] | None = None  # graph -> {"alpha", "groups", ...} (SmoothQuant), None if off
    calibration: Mapping[str, Any] | None = None  # what the smoothing was calibrated on

    @property
    def quantized(self) -> bool:
        return self.name in QUANTIZED

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "method": self.method, "block_size": self.block_size,
               "float_kept": list(self.float_kept),
               "quantized_ops": {g: dict(sorted(c.items())) for g, c in self.quantized_ops.items()}}
        if self.activation_scales is not None:
            out["activation_scales"] = self.activation_scales
        if self.name in ("int8", "fp8") and self.activation_scales is not None:
            out["smoothing"] = None if self.smoothing is None else dict(self.smoothing)
            out["calibration"] = None if self.calibration is None else dict(self.calibration)
        return out


def parse_precision(manifest: Mapping[str, Any], dtype: str, graphs: tuple[str, ...], where: str) -> PrecisionEntry:
    """The manifest's precision block checked for shape and against its dtype. No block: the dtype's precision."""
    raw = manifest.get("precision")
    float_name = {v: k for k, v in FLOAT_DTYPES.items()}[dtype]
    if raw is None:
        return PrecisionEntry(float_name, quantized_ops={g: {} for g in graphs})
    if not isinstance(raw, Mapping) or raw.get("name") not in MANIFEST_PRECISIONS:
        raise EngineArtifactError(f"{where}: 'precision' must be an object whose 'name' is one of "
                                  f"{list(MANIFEST_PRECISIONS)}, got {raw!r}")
    name = raw["name"]
    if activation_dtype(name) != dtype:
        raise EngineArtifactError(f"{where}: precision {name!r} runs {activation_dtype(name)} activations, but "
                                  f"'dtype' is {dtype!r}")
    block = raw.get("block_size")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool) or block < 16
                              or block & (block - 1)):
        raise EngineArtifactError(f"{where}: precision.block_size must be null or a power of two >= 16, got {block!r}")
    if name == "int4" and block is None:
        raise EngineArtifactError(f"{where}: an int4 engine must record its precision.block_size")
    kept = raw.get("float_kept", [])
    if not isinstance(kept, list) or not all(isinstance(k, str) for k in kept):
        raise EngineArtifactError(f"{where}: precision.float_kept must be a list of names, got {kept!r}")
    ops_raw = raw.get("quantized_ops")
    if not isinstance(ops_raw, Mapping) or set(ops_raw) != set(graphs):
        raise EngineArtifactError(f"{where}: precision.quantized_ops must give an operator census for each graph "
                                  f"{list(graphs)}, got {ops_raw!r}")
    census: dict[str, dict[str, int]] = {}
    for graph, counts in ops_raw.items():
        if not isinstance(counts, Mapping) or not all(
                k in QUANT_OPS and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in counts.items()):
            raise EngineArtifactError(f"{where}: precision.quantized_ops.{graph} must map quantization operators "
                                      f"({sorted(QUANT_OPS)}) to positive counts, got {counts!r}")
        census[graph] = dict(counts)
    scales = raw.get("activation_scales")
    if scales is not None and (name not in ("int8", "fp8") or scales not in ACTIVATION_SCALES):
        raise EngineArtifactError(f"{where}: precision.activation_scales must be absent or, for int8 / fp8, one of "
                                  f"{list(ACTIVATION_SCALES)}, got {scales!r}")
    extra = {}
    for key in ("smoothing", "calibration"):
        value = raw.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise EngineArtifactError(f"{where}: precision.{key} must be null or an object, got {value!r}")
        extra[key] = value
    if extra["smoothing"] and not extra["calibration"]:
        raise EngineArtifactError(f"{where}: precision.smoothing is set but precision.calibration does not say what "
                                  f"it was calibrated on")
    return PrecisionEntry(name, raw.get("method"), block, tuple(kept), census, scales, **extra)


def check_graph_precision(entry: PrecisionEntry, graph: str, found_ops: Mapping[str, int], where: str) -> None:
    """EngineArtifactError unless the graph's quantization operators are exactly the manifest's census for it."""
    found = {op: n for op, n in found_ops.items() if op in QUANT_OPS and n}
    declared = dict(entry.quantized_ops.get(graph, {}))
    if found != declared:
        raise EngineArtifactError(
            f"{where}: the manifest claims precision {entry.name!r} with quantization operators {declared or 'none'} "
            f"in graph {graph!r}, but the graph holds {found or 'none'}: the graph is not the one exported for this "
            f"precision (re-export with python -m export CKPT --precision {entry.name})")


def check_marker_ops(entry: PrecisionEntry, where: str) -> None:
    """A quantized claim needs its precision's operator in some graph (an "int8" engine of float graphs is not)."""
    if entry.name not in MARKER_OPS:
        return
    markers = MARKER_OPS[entry.name]
    if not any(op in ops for ops in entry.quantized_ops.values() for op in markers):
        raise EngineArtifactError(f"{where}: precision {entry.name!r} is claimed but no graph has a "
                                  f"{' / '.join(markers)} operator (census: {dict(entry.quantized_ops)})")
