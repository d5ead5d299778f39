"""What each TensorRT precision needs from the GPU and from the graph, checked statically (no TensorRT needed).

    precision   compute capability   the graph must carry
    fp32        any                  -
    fp16        >= 5.3               -   (fp16 arithmetic; tensor cores from 7.0)
    bf16        >= 8.0               -   (Ampere and newer)
    fp8         >= 8.9               FLOAT8E4M3FN QuantizeLinear/DequantizeLinear pairs (pre-quantized, e.g. ModelOpt)
    int8        >= 6.1               INT8 QuantizeLinear/DequantizeLinear pairs (pre-quantized: ModelOpt, or
                                     onnxruntime's quantize_static with QuantFormat.QDQ and a calibration set)

fp16 / bf16 are the float precision of a build (export/build_tensorrt.py `precision`); fp8 / int8 are flags on top
of it for explicitly quantized graphs. No calibration happens here: TensorRT 10 deprecated implicit INT8
calibration (IInt8Calibrator) and TensorRT 11 removed it, so an int8 build needs the quantization in the graph.
The int8 engines of `python -m export --precision int8` are onnxruntime graphs (QuantizeLinear per row +
MatMulIntegerToFloat, a com.microsoft operator TensorRT's ONNX parser does not take): TensorRT's INT8 / FP8 graphs
come from `python -m export.tensorrt_qdq` (the same smoothed weights, per-channel weight scales, static per-tensor
activation scales from the calibration set, as Q/DQ pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from c4u_engine.errors import InvalidInputError


@dataclass(frozen=True)
class PrecisionNeeds:
    min_capability: tuple[int, int]
    graph_tensor: str | None  # the ONNX tensor type the graph must hold (its Q/DQ pairs), None for float precisions
    hardware: str


NEEDS = {
    "fp32": PrecisionNeeds((0, 0), None, "any CUDA GPU"),
    "fp16": PrecisionNeeds((5, 3), None, "fp16 arithmetic (sm_53+; tensor cores sm_70+)"),
    "bf16": PrecisionNeeds((8, 0), None, "bf16 tensor cores (Ampere sm_80 or newer)"),
    "fp8": PrecisionNeeds((8, 9), "FLOAT8E4M3FN", "fp8 tensor cores (Ada sm_89 / Hopper sm_90 or newer)"),
    "int8": PrecisionNeeds((6, 1), "INT8", "int8 dot products (sm_61+; tensor cores sm_72+)"),
}
QUANTIZED_FLAGS = ("fp8", "int8")
_HOW_TO_QUANTIZE = {
    "fp8": "quantize it first (NVIDIA ModelOpt writes FLOAT8E4M3FN Q/DQ pairs)",
    "int8": "quantize it first with a calibration set (NVIDIA ModelOpt, or onnxruntime.quantization.quantize_static "
            "with quant_format=QuantFormat.QDQ); TensorRT 10 deprecated implicit calibration and 11 removed it",
}


def parse_capability(value: str | tuple[int, int]) -> tuple[int, int]:
    """"8.9", "89", "sm_89" or (8, 9) -> (8, 9)."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value
    text = str(value).lower().removeprefix("sm_").removeprefix("sm")
    try:
        major, minor = text.split(".") if "." in text else (text[:-1], text[-1])
        return int(major), int(minor)
    except ValueError:
        raise InvalidInputError(f"compute capability {value!r}: expected e.g. 8.9, 89 or sm_89") from None


def requirement_lines(flags: Iterable[str]) -> list[str]:
    """One line per precision flag: what it needs."""
    out = []
    for flag in flags:
        needs = NEEDS[flag]
        graph = f"; the graph must carry {needs.graph_tensor} Q/DQ pairs" if needs.graph_tensor else ""
        out.append(f"{flag}: compute capability >= {needs.min_capability[0]}.{needs.min_capability[1]} "
                   f"({needs.hardware}){graph}")
    return out


def precision_problems(flags: Iterable[str], capability: tuple[int, int] | None,
                       tensor_types: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(problems of the target GPU, problems of the graph) for building with these precision flags.

    capability None: the target is unknown and only the graph is checked. tensor_types: ONNX dtype name -> count
    (check_tensorrt.CheckReport.tensor_types)."""
    flags = list(flags)
    unknown = [f for f in flags if f not in NEEDS]
    if unknown:
        raise InvalidInputError(f"unknown TensorRT precision(s) {unknown}; valid: {list(NEEDS)}")
    target, graph = [], []
    for flag in flags:
        needs = NEEDS[flag]
        if capability is not None and capability < needs.min_capability:
            target.append(f"{flag} needs compute capability >= {needs.min_capability[0]}.{needs.min_capability[1]} "
                          f"({needs.hardware}); the target has {capability[0]}.{capability[1]}")
        if needs.graph_tensor and not tensor_types.get(needs.graph_tensor):
            graph.append(f"{flag} needs a pre-quantized graph ({needs.graph_tensor} Q/DQ pairs) and this one has no "
                         f"{needs.graph_tensor} tensor: {_HOW_TO_QUANTIZE[flag]}")
    for flag in QUANTIZED_FLAGS:
        tensor = NEEDS[flag].graph_tensor
        if tensor_types.get(tensor) and flag not in flags:
            graph.append(f"the graph is {flag}-quantized ({tensor} tensors): build it with the {flag} flag")
    return target, graph
