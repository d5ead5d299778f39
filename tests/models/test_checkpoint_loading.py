"""Checkpoint loading: both tensor namings, sharded indexes, tied embeddings, dtypes, fingerprints, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_qwen_checkpoints import (
    SPECS,
    hf_model,
    mm_token_type_ids,
    prompt_ids,
    random_pixels,
    save_classic,
    save_transformers_names,
)

from c4u_engine.errors import BackendUnavailableError, ModelFormatError, UnsupportedModelError
from c4u_engine.models import checkpoint_fingerprint, internal_name, load_model, load_state_dict, tensor_files


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory):
    hf = hf_model(SPECS["kv1_win56"], seed=21)
    return hf, save_classic(hf, tmp_path_factory.mktemp("classic"))


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory):
    hf = hf_model(SPECS["gqa3_win112_tied"], seed=22)
    return hf, save_classic(hf, tmp_path_factory.mktemp("tied"))


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def assert_matches_transformers(hf, model_dir: Path) -> None:
    grids = [[1, 4, 6], [1, 8, 4]]
    ids = torch.from_numpy(prompt_ids(grids, [2, 3, 1]))[None]
    pixels = random_pixels(grids)
    ref = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=torch.tensor(grids),
             mm_token_type_ids=mm_token_type_ids(ids)).logits
    got = load_model(model_dir).forward_logits(ids, pixels, np.array(grids))
    assert (got - ref).abs().max().item() < 1e-4


def test_classic_names_load(untied) -> None:
    hf, path = untied
    raw = load_file(str(path / "model.safetensors"))
    assert any(k.startswith("visual.") for k in raw) and "model.embed_tokens.weight" in raw  # really classic
    state = load_state_dict(path)
    assert "visual.patch_embed.proj.weight" in state and "language.lm_head.weight" in state
    assert "language.layers.0.self_attn.q_proj.bias" in state
    assert_matches_transformers(hf, path)


def test_transformers_names_load(untied, tmp_path: Path) -> None:
    hf, classic = untied
    path = save_transformers_names(hf, tmp_path / "t5")
    raw = load_file(str(path / "model.safetensors"))
    assert "model.language_model.embed_tokens.weight" in raw and "model.visual.merger.ln_q.weight" in raw
    assert_same_state(load_state_dict(path), load_state_dict(classic))


def test_sharded_index_loads(untied, tmp_path: Path) -> None:
    hf, classic = untied
    path = save_classic(hf, tmp_path / "sharded", max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file() and not (path / "model.safetensors").exists()
    assert len(set(tensor_files(path).values())) > 2
    assert_same_state(load_state_dict(path), load_state_dict(classic))


def test_tied_checkpoints(tied, tmp_path: Path) -> None:
    hf, classic = tied
    state = load_state_dict(classic)
    assert "language.lm_head.weight" not in state
    without_head = save_transformers_names(hf, tmp_path / "no_head")
    assert "lm_head.weight" not in load_file(str(without_head / "model.safetensors"))
    assert_same_state(load_state_dict(without_head), state)
    assert_matches_transformers(hf, without_head)


def test_internal_names() -> None:
    assert internal_name("model.visual.blocks.0.attn.qkv.weight") == "visual.blocks.0.attn.qkv.weight"
    assert internal_name("visual.merger.mlp.0.bias") == "visual.merger.mlp.0.bias"
    assert internal_name("model.language_model.norm.weight") == "language.norm.weight"
    assert internal_name("model.layers.3.mlp.up_proj.weight") == "language.layers.3.mlp.up_proj.weight"
    assert internal_name("lm_head.weight") == "language.lm_head.weight"
    assert internal_name("vision_tower.x") is None


def test_dtypes(untied) -> None:
    _, path = untied
    model = load_model(path)
    assert model.language.embed_tokens.weight.dtype == torch.float32  # dtype None on CPU: float32
    half = load_model(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half.language.rotary.inv_freq.dtype == torch.float32
    assert torch.equal(half.language.rotary.inv_freq, model.language.rotary.inv_freq)
    assert not any(p.is_meta for p in half.parameters()) and not half.training
    grids = [[1, 4, 6]]
    ids, pixels = prompt_ids(grids, [2, 3]), random_pixels(grids)
    full = model.forward_logits(ids, pixels, np.array(grids))
    low = half.forward_logits(ids, pixels, np.array(grids))
    assert low.dtype == torch.float32 and (low - full).abs().max().item() < 0.1 * full.abs().max().item()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal when no CUDA device exists")
def test_cuda_without_gpu_is_refused(untied) -> None:
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        load_model(untied[1], device="cuda")


def test_fingerprint(untied, tied, tmp_path: Path) -> None:
    hf, path = untied
    first = checkpoint_fingerprint(path)
    assert len(first) == 64 and first == checkpoint_fingerprint(path)
    assert checkpoint_fingerprint(copy_checkpoint(path, tmp_path / "copy")) == first  # content, not location
    other_weights = save_classic(hf_model(SPECS["kv1_win56"], seed=99), tmp_path / "other")
    assert checkpoint_fingerprint(other_weights) != first  # same architecture and header, other weights
    assert checkpoint_fingerprint(tied[1]) != first
    edited = copy_checkpoint(path, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    config["vision_config"]["window_size"] = 112
    (edited / "config.json").write_text(json.dumps(config))
    assert checkpoint_fingerprint(edited) != first


# ---- refusals ----------------------------------------------------------------------------------------------


def rewrite_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_pickle_only_is_refused(untied, tmp_path: Path) -> None:
    path = tmp_path / "pickle"
    path.mkdir()
    shutil.copy(untied[1] / "config.json", path)
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04 pickle bytes that must never be unpickled")
    with pytest.raises(ModelFormatError, match="pytorch_model.bin.*pickle"):
        load_model(path)
    (path / "pytorch_model.bin").unlink()
    (path / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="weights.ckpt.*pickle"):
        load_state_dict(path)
    (path / "weights.ckpt").unlink()
    with pytest.raises(ModelFormatError, match="no model.safetensors"):
        load_state_dict(path)


def test_missing_tensor_is_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "missing")
    rewrite_tensors(path, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
    with pytest.raises(ModelFormatError, match=r"missing tensor 'language.layers.1.self_attn.k_proj.bias'"):
        load_model(path)


def test_untied_checkpoint_without_lm_head_is_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "no_head")
    rewrite_tensors(path, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ModelFormatError, match="lm_head"):
        load_state_dict(path)


def test_wrong_shape_is_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "shape")
    rewrite_tensors(path, lambda t: t.__setitem__("visual.merger.mlp.2.weight", torch.zeros(64, 64)))
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    message = str(info.value)
    assert "visual.merger.mlp.2.weight" in message and "[64, 64]" in message and "[64, 128]" in message
    assert "model.safetensors" in message


def test_unexpected_and_duplicate_tensors_are_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "extra")
    rewrite_tensors(path, lambda t: t.__setitem__("vision_tower.proj.weight", torch.zeros(2)))
    with pytest.raises(ModelFormatError, match="unexpected tensor 'vision_tower.proj.weight'"):
        load_state_dict(path)
    path = copy_checkpoint(untied[1], tmp_path / "dup")
    rewrite_tensors(path, lambda t: t.__setitem__("model.language_model.norm.weight", t["model.norm.weight"].clone()))
    with pytest.raises(ModelFormatError, match="same weight"):
        load_state_dict(path)


def test_wrong_model_type_and_missing_config_are_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "llama")
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "llama"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="llama"):
        load_model(path)
    (path / "config.json").unlink()
    with pytest.raises(ModelFormatError, match="config.json"):
        load_model(path)
    with pytest.raises(ModelFormatError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_corrupt_safetensors_is_refused(untied, tmp_path: Path) -> None:
    path = copy_checkpoint(untied[1], tmp_path / "corrupt")
    (path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFormatError, match="not a readable safetensors file"):
        load_state_dict(path)


@pytest.fixture()
def sharded(untied, tmp_path: Path) -> Path:
    return save_classic(untied[0], tmp_path / "sharded", max_shard_size="40KB")


def edit_index(path: Path, edit) -> Path:
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    edit(index["weight_map"])
    index_path.write_text(json.dumps(index))
    return index_path


def test_index_with_missing_shard_is_refused(sharded: Path) -> None:
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelFormatError, match=f"lists shard '{shard.name}', which does not exist"):
        load_state_dict(sharded)


def test_index_pointing_to_wrong_shard_is_refused(sharded: Path) -> None:
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))

    def move_lm_head(weight_map: dict) -> None:
        weight_map["lm_head.weight"] = next(s for s in shards if s != weight_map["lm_head.weight"])

    edit_index(sharded, move_lm_head)
    with pytest.raises(ModelFormatError, match="'lm_head.weight' is listed in shard"):
        load_state_dict(sharded)


def test_index_listing_absent_or_omitting_tensors_is_refused(sharded: Path) -> None:
    first_shard = sorted(p.name for p in sharded.glob("model-*.safetensors"))[0]
    edit_index(sharded, lambda wm: wm.__setitem__("model.ghost.weight", first_shard))
    with pytest.raises(ModelFormatError, match="'model.ghost.weight' is listed .* but stored nowhere"):
        load_state_dict(sharded)
    edit_index(sharded, lambda wm: (wm.pop("model.ghost.weight"), wm.pop("model.norm.weight")))
    with pytest.raises(ModelFormatError, match="'model.norm.weight' is not listed"):
        load_state_dict(sharded)


def test_index_escaping_the_directory_is_refused(sharded: Path) -> None:
    edit_index(sharded, lambda wm: wm.__setitem__("lm_head.weight", "../elsewhere.safetensors"))
    with pytest.raises(ModelFormatError, match="not a file directly inside"):
        load_state_dict(sharded)
