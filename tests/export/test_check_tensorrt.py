"""Static TensorRT readiness check on hand-built ONNX graphs (no TensorRT, no GPU needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from c4u_engine.errors import EngineArtifactError
from export.check_tensorrt import assert_tensorrt_ready, check_graph, main, supported_ops
from export.profiles import ShapeProfile, ShapeRange, profiles_from_manifest, profiles_to_json

REPO = Path(__file__).resolve().parents[2]
TRT = supported_ops()["tensorrt_version"]


def tiny_model(opset: int = 17, dtype: int = TensorProto.FLOAT, extra: tuple = (), extra_inputs: tuple = ()):
    """x[batch, 4] -> MatMul(W) -> Softmax -> Add(x) -> y: the graph that must pass."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    w = numpy_helper.from_array(np.eye(4, dtype=np_dtype), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Softmax", ["m"], ["s"], name="softmax", axis=-1),
             helper.make_node("Add", ["s", "x"], ["y"], name="add"), *extra]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", dtype, ["batch", 4]), *extra_inputs],
        [helper.make_tensor_value_info("y", dtype, ["batch", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def batch_profile(lo: int = 1, opt: int = 4, hi: int = 16) -> list[ShapeProfile]:
    return [ShapeProfile("main", {"x": ShapeRange((lo, 4), (opt, 4), (hi, 4))})]


def test_support_list_is_complete_and_well_formed():
    table = supported_ops()
    assert table["tensorrt_version"].startswith("10.")
    assert "onnx-tensorrt operators.md for TensorRT 10.x" in table["source"]
    ops = table["operators"]
    assert len(ops) == 200 and sum(e["supported"] for e in ops.values()) == 158
    for name, entry in ops.items():
        assert set(entry) <= {"supported", "types", "restrictions"}, name
        assert all(t in table["type_names"] for t in entry.get("types", ())), name
    for op in ("MatMul", "Softmax", "Gather", "Concat", "Reshape", "Transpose", "Where", "ReduceMean", "Pow",
               "Sqrt", "Sin", "Cos", "Expand", "Slice", "Unsqueeze", "ScatterND", "Cast", "Mul", "Div"):
        assert ops[op]["supported"], op
    assert not ops["StringNormalizer"]["supported"] and not ops["TfIdfVectorizer"]["supported"]
    assert "reduction" in ops["ScatterND"]["restrictions"]


def test_tiny_graph_with_dynamic_batch_passes():
    report = check_graph(tiny_model(), batch_profile())
    assert report.ok, report.format()
    assert report.tensor_types["FLOAT"] >= 4 and f"ready for TensorRT {TRT}" in report.format()


def test_custom_domain_op_is_named_unless_a_plugin_is_declared():
    node = helper.make_node("FusedGelu", ["y"], ["z"], name="gelu0", domain="com.microsoft")
    model = tiny_model(extra=(node,))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    report = check_graph(model, batch_profile())
    assert len(report.problems) == 1
    assert "gelu0" in report.problems[0] and "com.microsoft::FusedGelu" in report.problems[0]
    assert TRT in report.problems[0]
    assert check_graph(model, batch_profile(), plugins=["com.microsoft::FusedGelu"]).ok


@pytest.mark.parametrize("op,inputs,attrs", [
    ("StringNormalizer", ["words"], {}),
    ("TfIdfVectorizer", ["ids"], {"mode": "TF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0,
                                  "ngram_counts": [0], "ngram_indexes": [0], "pool_int64s": [7]}),
])
def test_onnx_ops_that_tensorrt_lists_as_unsupported(op, inputs, attrs):
    dtype = TensorProto.STRING if op == "StringNormalizer" else TensorProto.INT64
    extra_input = helper.make_tensor_value_info(inputs[0], dtype, [3])
    node = helper.make_node(op, inputs, ["extra_out"], name="bad_node", **attrs)
    report = check_graph(tiny_model(extra=(node,), extra_inputs=(extra_input,)), batch_profile())
    assert any(f"op {op} is listed as unsupported by TensorRT {TRT}" in p and "bad_node" in p
               for p in report.problems), report.format()
    if op == "StringNormalizer":  # the string tensor is a problem of its own
        assert any("type STRING" in p and "words (input)" in p for p in report.problems)


def test_onnx_op_missing_from_the_list():
    node = helper.make_node("Swish", ["y"], ["z"], name="swish0")  # ai.onnx since opset 24, not in the 10.x list
    report = check_graph(tiny_model(opset=24, extra=(node,)), batch_profile())
    assert report.problems == [f"node 'swish0' (Swish): op Swish is not in TensorRT {TRT}'s supported ONNX "
                               "operator list"]


def test_float64_tensors_are_reported_with_their_names():
    report = check_graph(tiny_model(dtype=TensorProto.DOUBLE), batch_profile())
    assert len(report.problems) == 1
    msg = report.problems[0]
    assert "type DOUBLE" in msg and "W (initializer)" in msg and "x (input)" in msg and "y (output)" in msg
    cast = helper.make_node("Cast", ["y"], ["y64"], name="to_double", to=TensorProto.DOUBLE)
    report = check_graph(tiny_model(extra=(cast,)), batch_profile())  # found through shape inference
    assert any("type DOUBLE" in p and "y64 (value)" in p for p in report.problems), report.format()


def test_unsupported_integer_types():
    cast = helper.make_node("Cast", ["y"], ["y16"], name="to_u16", to=TensorProto.UINT16)
    report = check_graph(tiny_model(extra=(cast,)), batch_profile())
    assert any("type UINT16" in p and "not a TensorRT tensor type" in p for p in report.problems)


def test_opset_13_is_refused():
    report = check_graph(tiny_model(opset=13), batch_profile())
    assert len(report.problems) == 1 and "opset 13 is below 17" in report.problems[0]


def test_dynamic_input_missing_from_profile_and_no_profiles_at_all():
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])
    model = tiny_model(extra_inputs=(mask,))
    report = check_graph(model, batch_profile())
    assert report.problems == ["tiny: profile 'main': graph input 'mask'[batch, seq] has dynamic dimensions but "
                               "no min/opt/max shapes"]
    report = check_graph(model, None)
    assert len(report.problems) == 1 and "no optimization profile" in report.problems[0]
    assert "x[batch, 4]" in report.problems[0] and "mask[batch, seq]" in report.problems[0]
    shapeless = tiny_model(extra_inputs=(helper.make_tensor_value_info("blob", TensorProto.FLOAT, None),))
    assert "graph input 'blob' declares no shape" in "\n".join(check_graph(shapeless, batch_profile()).problems)


def test_inconsistent_profiles_are_reported():
    assert "min=9 opt=4 max=2" in "\n".join(check_graph(tiny_model(), batch_profile(9, 4, 2)).problems)
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"])
    profile = ShapeProfile("prefill", {"x": ShapeRange((1, 4), (4, 4), (16, 4)),
                                  "mask": ShapeRange((1, 1), (2, 64), (16, 512))})
    report = check_graph(tiny_model(extra_inputs=(mask,)), [profile])
    assert len(report.problems) == 1
    assert "dimension 'batch' is shared but its ranges differ" in report.problems[0]
    assert "x axis 0: min/opt/max 1/4/16" in report.problems[0]
    assert "mask axis 0: min/opt/max 1/2/16" in report.problems[0]
    static = ShapeProfile("p", {"x": ShapeRange((1, 8), (4, 8), (16, 8)), "nope": ShapeRange((1,), (1,), (1,))})
    problems = "\n".join(check_graph(tiny_model(), [static]).problems)
    assert "'x' axis 1 is static (4)" in problems and "'nope' is not a graph input" in problems


def test_restrictions_of_listed_ops():
    scatter = helper.make_node("ScatterND", ["y", "idx", "upd"], ["z"], name="scatter_add", reduction="add")
    reduce = helper.make_node("ReduceMean", ["y", "axes"], ["r"], name="mean_dyn_axes")
    model = tiny_model(opset=18, extra=(scatter, reduce), extra_inputs=(
        helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 1]),
        helper.make_tensor_value_info("upd", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("axes", TensorProto.INT64, [1])))
    problems = "\n".join(check_graph(model, batch_profile()).problems)
    assert "scatter_add" in problems and "reduction='add' is unsupported" in problems
    assert "mean_dyn_axes" in problems and "axes 'axes' is computed at run time" in problems


def test_type_outside_an_ops_listed_types_is_a_warning_only():
    eq = helper.make_node("Equal", ["flag", "flag"], ["same"], name="eq_bool")
    report = check_graph(tiny_model(extra=(eq,), extra_inputs=(
        helper.make_tensor_value_info("flag", TensorProto.BOOL, [2]),)), batch_profile())
    assert report.ok and any("eq_bool" in w and "BOOL" in w for w in report.warnings)


def test_assert_ready_raises_with_every_problem():
    with pytest.raises(EngineArtifactError) as err:
        assert_tensorrt_ready(tiny_model(opset=13, dtype=TensorProto.DOUBLE), None)
    text = str(err.value)
    assert "3 problem(s)" in text and "opset 13" in text and "DOUBLE" in text and "no optimization profile" in text


def test_external_data_is_not_loaded(tmp_path):
    model = tiny_model()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()  # the check must not need the weights
    assert check_graph(tmp_path / "m.onnx", batch_profile()).ok


def test_profiles_manifest_round_trip_and_malformed_manifests():
    section = {"decoder": [{"name": "prefill", "shapes": {"x": {"min": [1, 4], "opt": [2, 4], "max": [8, 4]}}},
                           {"name": "decode", "shapes": {"x": {"min": [1, 4], "opt": [1, 4], "max": [8, 4]}}}]}
    profiles = profiles_from_manifest({"profiles": section})
    assert [p.name for p in profiles["decoder"]] == ["prefill", "decode"]
    assert profiles_to_json(profiles) == section
    for bad in ({"decoder": []}, {"decoder": [{"name": "p", "shapes": {"x": {"min": [1], "max": [2]}}}]},
                {"decoder": [{"name": "p", "shapes": {"x": {"min": [1], "opt": [1, 2], "max": [2]}}}]},
                {"decoder": [{"name": "p", "shapes": {"x": {"min": [1.5], "opt": [2], "max": [2]}}}]}):
        with pytest.raises(EngineArtifactError, match="profiles.decoder"):
            profiles_from_manifest({"profiles": bad})


def _engine_dir(path: Path, model, profile_max: int = 16) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path / "decoder.onnx")
    manifest = {"graphs": {"decoder": {"file": "decoder.onnx"}},
                "profiles": {"decoder": [p.to_json() for p in batch_profile(hi=profile_max)]}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_cli_on_an_engine_dir(tmp_path, capsys):
    good = _engine_dir(tmp_path / "good", tiny_model())
    assert main([str(good)]) == 0
    assert "decoder.onnx: ready for TensorRT" in capsys.readouterr().out
    bad = _engine_dir(tmp_path / "bad", tiny_model(opset=13), profile_max=0)
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert "opset 13 is below 17" in err and "min=1 opt=4 max=0" in err
    assert main([str(bad / "decoder.onnx"), "--manifest", str(bad / "manifest.json")]) == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err
    assert main([str(tmp_path), "--manifest", str(tmp_path / "nope.json")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    _engine_dir(tmp_path, tiny_model(opset=13))
    proc = subprocess.run([sys.executable, "-m", "export.check_tensorrt", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "opset 13 is below 17" in proc.stderr


class _TinyDecoderLayer:
    """Builds a torch module with the ops a Qwen2-style decoder exports to (built lazily: torch is optional)."""

    @staticmethod
    def make():
        import torch

        class Layer(torch.nn.Module):
            def __init__(self, vocab: int = 32, hidden: int = 8) -> None:
                super().__init__()
                self.embed = torch.nn.Embedding(vocab, hidden)
                self.qkv = torch.nn.Linear(hidden, 3 * hidden)
                self.norm_w = torch.nn.Parameter(torch.ones(hidden))

            def forward(self, ids, past_k, positions):
                x = self.embed(ids)  # Gather
                var = x.pow(2).mean(-1, keepdim=True)  # Pow, ReduceMean
                x = x * self.norm_w / torch.sqrt(var + 1e-6)  # Sqrt
                inv = 1.0 / (10000 ** (torch.arange(0, 4, dtype=torch.float32) / 4))
                ang = positions.unsqueeze(-1).float() * inv  # Unsqueeze
                rope = torch.cat([ang.sin(), ang.cos()], -1)  # Sin, Cos, Concat
                q, k, v = self.qkv(x + rope).chunk(3, -1)  # MatMul, Slice / Split
                b, s, h = q.shape
                k, v = torch.cat([past_k, k], 1), torch.cat([past_k, v], 1)  # KV concat
                total = k.shape[1]
                scores = q.reshape(b, s, 2, h // 2).transpose(1, 2) @ \
                    k.reshape(b, total, 2, h // 2).permute(0, 2, 3, 1)  # Reshape, Transpose
                causal = torch.arange(total).unsqueeze(0) <= (torch.arange(s).unsqueeze(1) + total - s)
                scores = torch.where(causal.expand(b, 2, s, total), scores, torch.finfo(scores.dtype).min)
                probs = torch.softmax(scores, -1)  # Where, Expand, Softmax
                out = probs @ v.reshape(b, total, 2, h // 2).transpose(1, 2)
                out = out.transpose(1, 2).reshape(b, s, h)
                out = out.clone()
                out[:, -1] = out[:, -1] * 2.0  # ScatterND from the slice assignment
                return out, k

        return Layer()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter and torch internals
def test_torch_exported_transformer_ops_pass(tmp_path):
    """The legacy exporter (dynamo=False) is used: the dynamo exporter needs onnxscript, not installed here."""
    torch = pytest.importorskip("torch")
    layer = _TinyDecoderLayer.make().eval()
    ids, past_k, pos = torch.randint(0, 32, (2, 3)), torch.randn(2, 5, 8), torch.arange(5, 8).repeat(2, 1)
    path = tmp_path / "layer.onnx"
    torch.onnx.export(layer, (ids, past_k, pos), str(path), opset_version=17, dynamo=False,
                      input_names=["ids", "past_k", "positions"], output_names=["out", "present_k"],
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}, "past_k": {0: "batch", 1: "past"},
                                    "positions": {0: "batch", 1: "seq"}})
    used = {n.op_type for n in onnx.load(str(path)).graph.node}
    expected = {"MatMul", "Softmax", "Gather", "Concat", "Reshape", "Transpose", "Where", "ReduceMean", "Pow",
                "Sqrt", "Sin", "Cos", "Expand", "Slice", "Unsqueeze", "ScatterND"}
    assert expected <= used, f"the export no longer produces {expected - used}"
    profile = ShapeProfile("prefill", {"ids": ShapeRange((1, 1), (2, 16), (4, 64)),
                                  "past_k": ShapeRange((1, 0, 8), (2, 16, 8), (4, 64, 8)),
                                  "positions": ShapeRange((1, 1), (2, 16), (4, 64))})
    report = check_graph(path, [profile])
    assert report.ok, report.format()
