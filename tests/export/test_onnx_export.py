"""python -m export on tiny checkpoints: valid graphs, a manifest the TensorRT tools and the runtime accept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from c4u_engine._version import __version__
from c4u_engine.errors import InvalidInputError, UnsupportedModelError
from c4u_engine.models.checkpoint_files import checkpoint_fingerprint
from c4u_engine.models.layers import repeat_kv
from c4u_engine.runners.engine_dir import (FORMAT_VERSION, GraphEntry, decoder_input_names, graph_sha256,
                                           load_engine_dir)
from export.__main__ import main
from export.attention import grouped_sdpa
from export.build_tensorrt import onnx_sha256
from export.check_tensorrt import check_target, graph_inputs
from export.onnx_export import export_engine
from export.profiles import profiles_from_manifest, validate_profiles


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    """The default tiny checkpoint exported by the CLI (with its TensorRT check), and the CLI's output."""
    out = tmp_path_factory.mktemp("onnx_export") / "engine"
    rc = main([str(tiny_ckpt), "--out", str(out)])
    return out, rc


def test_cli_exports_and_the_tensorrt_check_passes(exported, capsys):
    out, rc = exported
    assert rc == 0
    reports = check_target(out)
    assert [r.ok for r in reports] == [True, True], "\n".join(r.format() for r in reports)
    names = {f.name for f in out.iterdir()}
    assert {"vision.onnx", "decoder.onnx", "embed_tokens.safetensors", "manifest.json", "config.json",
            "tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json",
            "preprocessor_config.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no staging leftovers


@pytest.mark.parametrize("graph", ["vision", "decoder"])
def test_graphs_pass_checker_and_strict_shape_inference(exported, graph):
    path = exported[0] / f"{graph}.onnx"
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # every attention traced through export/attention.py: the legacy SDPA decomposition (Transpose, scale, IsNaN
    # guard) would put two extra passes over the KV cache into every layer
    assert "IsNaN" not in {node.op_type for node in model.graph.node}


def test_manifest_describes_the_graphs(exported, tiny_ckpt):
    out = exported[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["exporter"]["version"] == __version__
    assert manifest["opset"] == 17 and manifest["dtype"] == "float32" and manifest["model_type"] == "qwen2_5_vl"
    assert manifest["source"]["fingerprint"] == checkpoint_fingerprint(tiny_ckpt)
    profiles = profiles_from_manifest(manifest)
    assert [p.name for p in profiles["decoder"]] == ["prefill", "decode"] and len(profiles["vision"]) == 1
    for graph in ("vision", "decoder"):
        entry = manifest["graphs"][graph]
        assert entry["sha256"] == onnx_sha256(out / entry["file"])
        model = onnx.load(str(out / entry["file"]), load_external_data=False)
        assert [i["name"] for i in entry["inputs"]] == list(graph_inputs(model))
        assert [o["name"] for o in entry["outputs"]] == [o.name for o in model.graph.output]
        assert validate_profiles(graph, profiles[graph], graph_inputs(model)) == []
    decoder = {s["name"]: s for s in manifest["graphs"]["decoder"]["inputs"] + manifest["graphs"]["decoder"]["outputs"]}
    assert decoder["inputs_embeds"]["shape"] == ["batch", "seq", 64]
    assert decoder["position_ids"] == {"name": "position_ids", "dtype": "int64", "shape": [3, "batch", "seq"]}
    assert decoder["attention_mask"] == {"name": "attention_mask", "dtype": "bool", "shape": ["batch", "total"]}
    assert decoder["past_key_1"]["shape"] == ["batch", 2, "past", 16]
    assert decoder["frozen_value_1"]["shape"] == ["batch", 2, "frozen", 16]
    assert decoder["present_value_0"]["shape"] == ["batch", 2, "grown", 16]  # past + new: the frozen slots stay out
    assert decoder["logits"]["shape"][:2] == ["batch", "num_logits"] and decoder["logits"]["dtype"] == "float32"
    vision = {s["name"]: s for s in manifest["graphs"]["vision"]["inputs"] + manifest["graphs"]["vision"]["outputs"]}
    assert vision["pixel_patches"]["shape"] == ["patches", 1176] and vision["image_embeds"]["shape"] == ["units", 64]
    for name in manifest["files"]:
        assert (out / name).read_bytes() == (tiny_ckpt / name).read_bytes()
    assert checkpoint_fingerprint(out) == checkpoint_fingerprint(tiny_ckpt)  # engine dir: the manifest's source


def test_one_decoder_graph_serves_prefill_with_empty_past_and_decode(exported):
    out = exported[0]
    session = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    names = decoder_input_names(2)
    rng = np.random.default_rng(0)
    present = None
    for past_len, new in ((0, 5), (5, 1), (6, 3)):
        feeds = {"inputs_embeds": rng.standard_normal((2, new, 64)).astype(np.float32),
                 "position_ids": np.broadcast_to(np.arange(past_len, past_len + new), (3, 2, new)).copy(),
                 "attention_mask": np.ones((2, past_len + new), bool),
                 "logits_index": np.full((2, 1), new - 1, np.int64)}
        caches = present or [np.zeros((2, 2, 0, 16), np.float32)] * 4
        feeds.update(zip(names[4:], caches + [np.zeros((2, 2, 0, 16), np.float32)] * 4))  # no frozen slots
        logits, *present = session.run(None, feeds)
        assert logits.shape == (2, 1, 512) and np.isfinite(logits).all()
        assert all(t.shape == (2, 2, past_len + new, 16) for t in present)


def test_frozen_slots_are_attended_like_past_ones_but_not_returned(exported):
    """The cache split anywhere into frozen then past gives the logits of the whole cache as past (within float
    summation order), and present holds only past + new: a decode step never copies the frozen slots."""
    session = ort.InferenceSession(str(exported[0] / "decoder.onnx"), providers=["CPUExecutionProvider"])
    names = decoder_input_names(2)
    rng = np.random.default_rng(3)
    cache = [rng.standard_normal((2, 2, 9, 16)).astype(np.float32) for _ in range(4)]
    mask = np.ones((2, 10), bool)
    mask[1, 2:4] = False  # a padded hole in row 1, inside the frozen part for every split below but 0 and 1
    head = {"inputs_embeds": rng.standard_normal((2, 1, 64)).astype(np.float32),
            "position_ids": np.full((3, 2, 1), 9, np.int64), "attention_mask": mask,
            "logits_index": np.zeros((2, 1), np.int64)}
    runs = {}
    for frozen in (0, 1, 4, 9):
        feeds = dict(head)
        feeds.update(zip(names[4:], [t[:, :, frozen:] for t in cache] + [t[:, :, :frozen] for t in cache]))
        logits, *present = session.run(None, feeds)
        assert all(p.shape == (2, 2, 9 - frozen + 1, 16) for p in present)
        np.testing.assert_array_equal(present[0][:, :, :-1], cache[0][:, :, frozen:])
        runs[frozen] = (logits, [p[:, :, -1] for p in present])
    for frozen in (1, 4, 9):
        np.testing.assert_allclose(runs[frozen][0], runs[0][0], rtol=0, atol=1e-5)
        for new_kv, whole_kv in zip(runs[frozen][1], runs[0][1]):
            np.testing.assert_allclose(new_kv, whole_kv, rtol=0, atol=1e-6)
    masked = dict(head, attention_mask=np.ones((2, 10), bool))  # and the mask reaches the frozen slots
    masked.update(zip(names[4:], [t[:, :, 4:] for t in cache] + [t[:, :, :4] for t in cache]))
    assert np.abs(session.run(None, masked)[0][1] - runs[4][0][1]).max() > 1e-4


def test_external_data_is_hashed_and_loadable(tiny_ckpt, exported, tmp_path):
    result = export_engine(tiny_ckpt, tmp_path / "ext", external_data=True, log=_quiet)
    out = result.out_dir
    for graph in ("vision", "decoder"):
        entry = result.manifest["graphs"][graph]
        assert entry["external_data"] == [f"{graph}.onnx.data"] and (out / f"{graph}.onnx.data").is_file()
        assert entry["sha256"] == onnx_sha256(out / entry["file"])
        spec = GraphEntry(graph, entry["file"], entry["sha256"], tuple(entry["external_data"]), (), ())
        assert graph_sha256(out, spec) == entry["sha256"]  # the runtime's digest, without onnx
    assert (out / "decoder.onnx").stat().st_size < (exported[0] / "decoder.onnx").stat().st_size // 4
    load_engine_dir(out)
    session = ort.InferenceSession(str(out / "vision.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()][0] == "pixel_patches"


def test_bfloat16_export_is_tensorrt_ready(tiny_ckpt, tmp_path):
    result = export_engine(tiny_ckpt, tmp_path / "bf16", dtype="bfloat16", log=_quiet)
    assert result.manifest["dtype"] == "bfloat16" and result.manifest["embeddings"]["dtype"] == "bfloat16"
    reports = check_target(result.out_dir)
    assert all(r.ok for r in reports), "\n".join(r.format() for r in reports)
    assert all(r.tensor_types.get("BFLOAT16", 0) > 0 for r in reports)
    inputs = {s["name"]: s["dtype"] for s in result.manifest["graphs"]["decoder"]["inputs"]}
    assert inputs["inputs_embeds"] == inputs["past_key_0"] == "bfloat16" and inputs["position_ids"] == "int64"


@pytest.mark.parametrize("mask_shape", [None, (6, 6), (2, 1, 6, 6)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 1), (2, 2)])
def test_grouped_sdpa_equals_sdpa_with_repeated_kv(heads, kv_heads, mask_shape):
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    q = torch.randn(2, heads, 6, 8, generator=gen)
    k, v = torch.randn(2, kv_heads, 6, 8, generator=gen), torch.randn(2, kv_heads, 6, 8, generator=gen)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(mask_shape, generator=gen) > 0.4
        mask |= torch.eye(6, dtype=torch.bool)  # every row keeps itself, as the model's masks do
    groups = heads // kv_heads
    expected = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=mask)
    torch.testing.assert_close(grouped_sdpa(q, k, v, mask), expected, atol=1e-6, rtol=1e-5)


def test_bad_options_and_models_are_refused(tiny_ckpt, tmp_path):
    with pytest.raises(InvalidInputError, match="opset"):
        export_engine(tiny_ckpt, tmp_path / "a", opset=16, log=_quiet)
    with pytest.raises(InvalidInputError, match="dtype"):
        export_engine(tiny_ckpt, tmp_path / "a", dtype="int8", log=_quiet)
    with pytest.raises(InvalidInputError, match="differ"):
        export_engine(tiny_ckpt, tiny_ckpt, log=_quiet)
    other = tmp_path / "qwen2_vl"
    shutil.copytree(tiny_ckpt, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    with pytest.raises(UnsupportedModelError, match="qwen2_vl"):
        export_engine(other, log=_quiet)
    assert not (other / "onnx").exists()
    assert main([str(other), "--out", str(tmp_path / "b")]) == 2


def test_attention_mask_bias_is_made_once_per_mask(tiny_ckpt_factory, tmp_path):
    """The mask's additive bias is computed once and added in every layer: the count of Where nodes (onnxruntime's
    CPU Where with broadcasting is ~5x slower than Add) must not grow with the number of layers."""
    counts = {}
    for layers in (1, 3):
        ckpt = tiny_ckpt_factory(text=dict(num_hidden_layers=layers))
        out = export_engine(ckpt, tmp_path / f"l{layers}", log=_quiet).out_dir
        ops = [n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node]
        counts[layers] = ops.count("Where")
    assert counts[1] == counts[3] <= 2, counts
