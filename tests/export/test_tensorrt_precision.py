"""What each TensorRT precision needs (export/tensorrt_precision.py), through the static check and the builder's
typing plan: refusals of targets and graphs that cannot give a precision, and the command line."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import export.build_tensorrt as bt
from c4u_engine.errors import EngineArtifactError, InvalidInputError
from export.check_tensorrt import check_graph, check_target, main
from export.onnx_export import export_engine
from export.tensorrt_precision import parse_capability, precision_problems, requirement_lines

TRT10 = SimpleNamespace(__version__="10.15.1.29",
                        BuilderFlag=SimpleNamespace(BF16="BF16", FP16="FP16", FP8="FP8", INT8="INT8"))


def _qdq_int8_graph() -> onnx.ModelProto:
    """x -> QuantizeLinear(int8) -> DequantizeLinear -> MatMul(W dequantized from int8): an explicitly quantized
    graph as ModelOpt or quantize_static(QuantFormat.QDQ) writes it."""
    w = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "w_q")
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "scale", "zero"], ["w_dq"]),
             helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, scale, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_capabilities_parse():
    assert [parse_capability(v) for v in ("8.9", "89", "sm_90", (7, 5), "10.0")] == [(8, 9), (8, 9), (9, 0), (7, 5),
                                                                                       (10, 0)]
    with pytest.raises(InvalidInputError, match="expected e.g. 8.9"):
        parse_capability("hopper")


@pytest.mark.parametrize("flags,capability,types,target,graph", [
    (["bf16"], (7, 5), {"FLOAT": 3}, "bf16 needs compute capability >= 8.0", None),
    (["fp16"], (7, 5), {"FLOAT": 3}, None, None),
    (["bf16", "fp8"], (9, 0), {"BFLOAT16": 3}, None, "fp8 needs a pre-quantized graph"),
    (["bf16", "fp8"], (8, 6), {"BFLOAT16": 3, "FLOAT8E4M3FN": 2}, "fp8 needs compute capability >= 8.9", None),
    (["fp16", "int8"], (8, 0), {"FLOAT": 3, "INT8": 2}, None, None),
    (["fp16", "int8"], (8, 0), {"FLOAT": 3}, None, "int8 needs a pre-quantized graph"),
    (["fp16"], (8, 0), {"FLOAT": 3, "INT8": 2}, None, "build it with the int8 flag"),
    (["int8"], (6, 0), {"INT8": 2}, "int8 needs compute capability >= 6.1", None),
    (["bf16"], None, {"FLOAT": 3}, None, None),  # target unknown: only the graph is judged
])
def test_precision_problems(flags, capability, types, target, graph):
    target_problems, graph_problems = precision_problems(flags, capability, types)
    assert (target is None) == (not target_problems) and all(target in p for p in target_problems)
    assert (graph is None) == (not graph_problems) and all(graph in p for p in graph_problems)
    with pytest.raises(InvalidInputError, match="unknown TensorRT precision"):
        precision_problems(["int4"], None, {})


def test_explicitly_quantized_int8_graph_passes_the_static_check(tmp_path):
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_int8_graph(), str(path))
    report = check_graph(path)
    assert report.ok and report.tensor_types.get("INT8")
    reports = check_target(path, precisions=["fp16", "int8"], capability=(8, 0))
    assert all(r.ok for r in reports), [r.problems for r in reports]
    reports = check_target(path, precisions=["fp16"], capability=(8, 0))  # quantized, but the flag not asked
    assert not reports[0].ok and "build it with the int8 flag" in reports[0].problems[0]


def test_onnxruntime_int8_engine_is_not_a_tensorrt_int8_graph(tiny_ckpt, tmp_path):
    """The int8 engines of python -m export are onnxruntime's (MatMulIntegerToFloat, a com.microsoft operator): the
    check says TensorRT cannot parse them rather than building something else (TensorRT's int8 graphs come from
    export/tensorrt_qdq.py, tests/export/test_tensorrt_qdq.py)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    engine = export_engine(ckpt, precision="int8", log=lambda m: None).out_dir
    reports = check_target(engine, precisions=["fp32", "int8"], capability=(9, 0))
    decoder = next(r for r in reports if r.source.endswith("decoder.onnx"))
    assert not decoder.ok and any("MatMulInteger" in p for p in decoder.problems)


def test_typing_plan_with_int8():
    assert bt.typing_plan(TRT10, "fp16", {"FLOAT": 10, "INT8": 2}, fp8=False, int8=True) == (False, ["FP16", "INT8"])
    assert bt.typing_plan(TRT10, "fp32", {"FLOAT": 10, "INT8": 2}, fp8=False, int8=True) == (True, [])
    with pytest.raises(EngineArtifactError, match="int8 needs a pre-quantized graph"):
        bt.typing_plan(TRT10, "fp16", {"FLOAT": 10}, fp8=False, int8=True)


def test_command_line_reports_needs_and_refusals(tmp_path, capsys):
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_int8_graph(), str(path))
    assert main([str(path), "--precision", "fp16", "--precision", "int8", "--target-sm", "8.0"]) == 0
    out = capsys.readouterr().out
    assert requirement_lines(["int8"])[0] in out and "ready for TensorRT" in out
    assert main([str(path), "--precision", "bf16", "--precision", "int8", "--target-sm", "7.5"]) == 1
    assert "bf16 needs compute capability >= 8.0" in capsys.readouterr().err
    assert main([str(path), "--precision", "bf16", "--target-sm", "hopper"]) == 2
