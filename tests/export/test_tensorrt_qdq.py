"""Q/DQ graphs for TensorRT's INT8 / FP8 builds: smoothed weights, per-channel weight scales, static activation
scales; they pass the static TensorRT check for their precision, onnxruntime runs the int8 one near fp32, and on a
checkpoint with outlier channels smoothing is what keeps one activation scale per tensor usable."""

from __future__ import annotations

import onnx
import pytest

from tiny_checkpoint import add_outlier_channels

from c4u_engine.errors import InvalidInputError
from c4u_engine.runners.engine_dir import load_engine_dir
from c4u_engine.runners.onnx_ops import op_counts
from export.calibration import synthetic_set
from export.check_tensorrt import check_target
from export.onnx_export import export_engine
from export.tensorrt_qdq import qdq_engine
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def outlier_fp32(tiny_ckpt, tmp_path_factory):
    root = add_outlier_channels(tiny_ckpt, tmp_path_factory.mktemp("qdq") / "ckpt")
    return export_engine(root, log=_quiet).out_dir


def test_qdq_graphs_pass_the_static_check_and_stay_near_fp32(outlier_fp32, tmp_path):
    calibration = synthetic_set(groups=2, size=112)
    smoothed = qdq_engine(outlier_fp32, tmp_path / "int8", "int8", calibration=calibration, log=_quiet)
    qdq_engine(outlier_fp32, tmp_path / "int8-plain", "int8", smoothing=False, calibration=calibration, log=_quiet)
    block = smoothed["precision"]
    assert block["name"] == "int8" and block["method"] == "c4u.smoothquant_qdq"
    assert block["smoothing"]["decoder"]["groups"] == 7 and block["calibration"]["creatives"] == 8
    # 15 weight MatMuls each read a dequantized weight; one Q/DQ pair per distinct activation (9)
    assert block["quantized_ops"]["decoder"] == {"DequantizeLinear": 15 + 9, "QuantizeLinear": 9}
    assert op_counts(tmp_path / "int8" / "decoder.onnx")["MatMulInteger"] == 0
    assert load_engine_dir(tmp_path / "int8").precision.name == "int8"

    for report in check_target(tmp_path / "int8", precisions=["fp16", "int8"], capability=(8, 9)):
        assert report.ok, report.format()
        assert report.tensor_types.get("INT8", 0) > 0
    model = onnx.load(str(tmp_path / "int8" / "decoder.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert all(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weight_dq)  # per channel

    # onnxruntime runs the int8 Q/DQ graphs on CPU (slowly): the selection they give, against fp32
    images = [make_test_image(56, 56, seed=s) for s in range(4)]
    ref = Engine(outlier_fp32).select(images, PROFILE, strategy="round_robin")
    drift = {}
    for name in ("int8", "int8-plain"):
        got = Engine(tmp_path / name).select(images, PROFILE, strategy="round_robin")
        drift[name] = max(abs(a.prob_a - b.prob_a) for a, b in zip(got.comparisons, ref.comparisons))
    # measured: 0.0016 smoothed, 0.044 without smoothing (the outlier channels set every tensor's scale)
    assert drift["int8"] <= 2**-7 and drift["int8-plain"] > 2**-7, drift


def test_fp8_qdq_graphs(outlier_fp32, tmp_path):
    qdq_engine(outlier_fp32, tmp_path / "fp8", "fp8", calibration=synthetic_set(groups=1, size=112), log=_quiet)
    engine_dir = load_engine_dir(tmp_path / "fp8")
    assert engine_dir.precision.name == "fp8"
    model = onnx.load(str(tmp_path / "fp8" / "decoder.onnx"))
    assert any(o.version >= 19 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for report in check_target(tmp_path / "fp8", precisions=["fp16", "fp8"], capability=(8, 9)):
        assert report.ok, report.format()
        assert report.tensor_types.get("FLOAT8E4M3FN", 0) > 0
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        qdq_engine(outlier_fp32, tmp_path / "x", "int4", log=_quiet)
