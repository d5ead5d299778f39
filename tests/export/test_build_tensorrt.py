"""TensorRT engine builder: the parts that run everywhere, and (marked `tensorrt`) a real build against onnxruntime."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from c4u_engine.errors import BackendUnavailableError, EngineArtifactError, InvalidInputError
from export import build_tensorrt as bt
from export.profiles import ShapeProfile, ShapeRange

requires_tensorrt = pytest.mark.skipif(find_spec("tensorrt") is None, reason="tensorrt is not installed")


def tiny_model(dtype: int = TensorProto.FLOAT):
    """x[batch, 4] -> MatMul(W) -> Softmax -> Add(x) -> y, W a fixed non-trivial matrix."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4).astype(np_dtype) / 8, "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Softmax", ["m"], ["s"], name="softmax", axis=-1),
             helper.make_node("Add", ["s", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", dtype, ["batch", 4])],
                              [helper.make_tensor_value_info("y", dtype, ["batch", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


PROFILES = [ShapeProfile("small", {"x": ShapeRange((1, 4), (2, 4), (4, 4))}),
            ShapeProfile("large", {"x": ShapeRange((5, 4), (8, 4), (32, 4))})]


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError


def test_build_without_tensorrt_raises_backend_unavailable(tmp_path, no_tensorrt):
    onnx.save(tiny_model(), tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        bt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", PROFILES)
    assert not (tmp_path / "m.plan").exists()


def test_cli_without_tensorrt_fails_cleanly(tmp_path, capsys, no_tensorrt):
    onnx.save(tiny_model(), tmp_path / "decoder.onnx")
    manifest = {"graphs": {"decoder": {"file": "decoder.onnx"}},
                "profiles": {"decoder": [p.to_json() for p in PROFILES]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert bt.main([str(tmp_path)]) == 1
    assert "tensorrt is not installed" in capsys.readouterr().err


def test_load_engine_needs_its_sidecar_then_tensorrt(tmp_path, no_tensorrt):
    plan = tmp_path / "decoder.plan"
    plan.write_bytes(b"not an engine")
    with pytest.raises(EngineArtifactError, match="no sidecar decoder.plan.json"):
        bt.load_engine(plan)
    bt.sidecar_path(plan).write_text("{}")
    with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
        bt.load_engine(plan)


def test_arguments_are_checked_before_tensorrt_is_needed(tmp_path, no_tensorrt):
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        bt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", PROFILES, precision="int8")
    with pytest.raises(InvalidInputError, match="at least one optimization profile"):
        bt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", [])
    with pytest.raises(InvalidInputError, match="0..5"):
        bt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", PROFILES, builder_optimization_level=7)


def _meta(**changes):
    meta = {"format": 1, "graph": "decoder", "tensorrt_version": "10.15.1.29",
            "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
            "onnx": {"file": "decoder.onnx", "sha256": "aa"}, "profiles": [p.to_json() for p in PROFILES]}
    meta.update(changes)
    return meta


def _problems(meta, **expected):
    here = dict(tensorrt_version="10.15.1.29", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                expected_onnx_sha256="aa", expected_profiles=PROFILES)
    here.update(expected)
    return bt.check_sidecar(meta, **here)


def test_sidecar_check_refuses_each_mismatch():
    assert _problems(_meta()) == []
    assert "built with TensorRT 10.14.1.48, this is TensorRT 10.15.1.29" in _problems(
        _meta(tensorrt_version="10.14.1.48"))[0]
    assert "this GPU is NVIDIA H200" in _problems(_meta(), gpu_name="NVIDIA H200")[0]
    assert "compute capability" in _problems(_meta(), compute_capability=(8, 9))[0]
    assert "the manifest declares bb" in _problems(_meta(), expected_onnx_sha256="bb")[0]
    assert "profiles differ" in _problems(_meta(), expected_profiles=PROFILES[:1])[0]
    assert len(_problems(_meta(format=0, tensorrt_version="9"), gpu_name="x", expected_onnx_sha256="bb")) == 4


def test_onnx_digest_follows_external_weights(tmp_path):
    model = tiny_model()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    before = bt.onnx_sha256(tmp_path / "m.onnx")
    data = bytearray((tmp_path / "m.data").read_bytes())
    data[0] ^= 1  # new weights, identical graph file
    (tmp_path / "m.data").write_bytes(bytes(data))
    assert bt.onnx_sha256(tmp_path / "m.onnx") != before
    (tmp_path / "m.data").unlink()
    with pytest.raises(EngineArtifactError, match="file not found"):
        bt.onnx_sha256(tmp_path / "m.onnx")


TRT10 = SimpleNamespace(__version__="10.15.1.29", BuilderFlag=SimpleNamespace(BF16="BF16", FP16="FP16", FP8="FP8"))
TRT11 = SimpleNamespace(__version__="11.4.0.106", BuilderFlag=SimpleNamespace())  # weak-typing flags removed


def test_typing_plan_strong_when_the_graph_carries_its_precision():
    assert bt.typing_plan(TRT10, "bf16", {"BFLOAT16": 10, "FLOAT": 3, "INT64": 2}, fp8=False) == (True, [])
    assert bt.typing_plan(TRT11, "bf16", {"BFLOAT16": 10}, fp8=False) == (True, [])
    assert bt.typing_plan(TRT11, "fp32", {"FLOAT": 10}, fp8=False) == (True, [])
    with pytest.raises(EngineArtifactError, match="precision='fp16' but the graph's tensors are BFLOAT16"):
        bt.typing_plan(TRT10, "fp16", {"BFLOAT16": 10}, fp8=False)


def test_typing_plan_weak_flags_only_on_tensorrt_10():
    assert bt.typing_plan(TRT10, "bf16", {"FLOAT": 10}, fp8=False) == (False, ["BF16"])
    assert bt.typing_plan(TRT10, "fp16", {"FLOAT": 10, "FLOAT8E4M3FN": 2}, fp8=True) == (False, ["FP16", "FP8"])
    with pytest.raises(EngineArtifactError, match="strongly typed networks only"):
        bt.typing_plan(TRT11, "bf16", {"FLOAT": 10}, fp8=False)
    with pytest.raises(EngineArtifactError, match="no FLOAT8E4M3FN tensor"):
        bt.typing_plan(TRT10, "bf16", {"BFLOAT16": 10}, fp8=True)
    with pytest.raises(EngineArtifactError, match="build it with the fp8 flag"):
        bt.typing_plan(TRT10, "bf16", {"BFLOAT16": 10, "FLOAT8E4M3FN": 1}, fp8=False)


def test_parser_errors_name_node_and_operator():
    class Err:
        def desc(self): return "Unsupported operator"
        def node(self): return 7
        def node_name(self): return "swish0"
        def node_operator(self): return "Swish"
        def code(self): return "ErrorCode.UNSUPPORTED_NODE"

    parser = SimpleNamespace(num_errors=1, get_error=lambda i: Err())
    assert bt.format_parser_errors(parser) == [
        "Unsupported operator (node 7, name swish0, operator Swish; code ErrorCode.UNSUPPORTED_NODE)"]


# ---------------------------------------------------------------------------------------------- real TensorRT


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch


@pytest.mark.tensorrt
@requires_tensorrt
@pytest.mark.parametrize("graph_dtype,precision", [
    (TensorProto.FLOAT, "fp32"),  # strongly typed
    (TensorProto.FLOAT16, "fp16"),  # strongly typed: the graph carries fp16
    (TensorProto.FLOAT, "fp16"),  # weak typing: TensorRT 10 only
])
def test_build_run_and_compare_with_onnxruntime(tmp_path, graph_dtype, precision):
    torch = _cuda_torch()
    import onnxruntime as ort
    import tensorrt as trt

    weak = graph_dtype == TensorProto.FLOAT and precision != "fp32"
    if weak and not hasattr(trt.BuilderFlag, "FP16"):
        pytest.skip(f"TensorRT {trt.__version__} has no weak typing")
    onnx.save(tiny_model(graph_dtype), tmp_path / "decoder.onnx")
    cache = tmp_path / "timing.cache"
    meta = bt.build_engine(tmp_path / "decoder.onnx", tmp_path / "decoder.plan", PROFILES, precision=precision,
                           timing_cache_path=cache, builder_optimization_level=0, progress=False)
    assert cache.stat().st_size > 0 and meta["strongly_typed"] is not weak
    assert meta["profiles"] == [p.to_json() for p in PROFILES]
    manifest = {"graphs": {"decoder": {"sha256": bt.onnx_sha256(tmp_path / "decoder.onnx")}},
                "profiles": {"decoder": [p.to_json() for p in PROFILES]}}
    engine, loaded = bt.load_engine(tmp_path / "decoder.plan", manifest)
    session = bt.TrtSession(engine, loaded)
    onnx.save(tiny_model(), tmp_path / "reference.onnx")  # fp32 reference; W is exact in fp16
    ref = ort.InferenceSession(str(tmp_path / "reference.onnx"), providers=["CPUExecutionProvider"])
    np_dtype = helper.tensor_dtype_to_np_dtype(graph_dtype)
    tol = 1e-5 if precision == "fp32" else 2e-2
    for batch, profile in ((3, "small"), (17, "large"), (1, None)):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np_dtype)
        out = session.run({"x": torch.from_numpy(x).cuda()}, profile=profile)["y"]
        torch.cuda.synchronize()
        expected = ref.run(None, {"x": x.astype(np.float32)})[0]
        np.testing.assert_allclose(out.float().cpu().numpy(), expected, rtol=tol, atol=tol)
    with pytest.raises(InvalidInputError, match="no optimization profile holds"):
        session.run({"x": torch.zeros(64, 4, device="cuda", dtype=out.dtype)})
    manifest["graphs"]["decoder"]["sha256"] = "0" * 64
    with pytest.raises(EngineArtifactError, match="the manifest declares 000"):
        bt.load_engine(tmp_path / "decoder.plan", manifest)


@pytest.mark.tensorrt
@requires_tensorrt
def test_parser_failure_names_the_node(tmp_path):
    _cuda_torch()
    model = tiny_model()
    model.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["z"], name="mystery"))
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(EngineArtifactError, match="mystery"):  # the static check stops it before TensorRT
        bt.build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan", PROFILES, precision="fp32")
    with pytest.raises(EngineArtifactError, match="could not parse") as err:  # declared a plugin nobody registered
        bt.build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan", PROFILES, precision="fp32",
                        plugins=["NoSuchOp"], progress=False)
    assert "NoSuchOp" in str(err.value) or "mystery" in str(err.value)
