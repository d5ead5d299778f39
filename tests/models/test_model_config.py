"""ModelConfig.from_json: both config layouts, hand-written Hub configs, and precise refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from tiny_qwen_checkpoints import SPECS, hf_config

from c4u_engine.errors import ModelFormatError, UnsupportedModelError
from c4u_engine.models import ModelConfig

# Qwen/Qwen2.5-VL-7B-Instruct's config.json as published (classic layout: text fields at the top level).
CLASSIC_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}

# Qwen/Qwen2.5-VL-3B-Instruct: tied embeddings, two KV heads.
CLASSIC_3B = {
    **CLASSIC_7B,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "vision_config": {**CLASSIC_7B["vision_config"], "out_hidden_size": 2048},
}


def write_config(directory: Path, config: dict, generation: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if generation is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation))
    return directory / "config.json"


def test_classic_7b_layout(tmp_path: Path) -> None:
    path = write_config(tmp_path, CLASSIC_7B, {"eos_token_id": [151645, 151643]})
    cfg = ModelConfig.from_json(path)
    t, v = cfg.text, cfg.vision
    assert (t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (3584, 28, 4, 128)
    assert (t.num_hidden_layers, t.intermediate_size, t.vocab_size) == (28, 18944, 152064)
    assert t.mrope_section == (16, 24, 24) and t.rope_theta == 1e6 and t.rms_norm_eps == 1e-6
    assert t.max_position_embeddings == 128000 and not t.tie_word_embeddings and t.hidden_act == "silu"
    assert (v.depth, v.hidden_size, v.num_heads, v.head_dim, v.intermediate_size) == (32, 1280, 16, 80, 3420)
    assert (v.in_chans, v.patch_size, v.temporal_patch_size, v.spatial_merge_size) == (3, 14, 2, 2)
    assert v.window_size == 112 and v.fullatt_block_indexes == (7, 15, 23, 31) and v.out_hidden_size == 3584
    assert v.patch_dim == 1176 and v.merge_unit == 4 and v.rope_theta == 10000.0
    assert (cfg.image_token_id, cfg.video_token_id) == (151655, 151656)
    assert (cfg.vision_start_token_id, cfg.vision_end_token_id) == (151652, 151653)
    assert cfg.eos_token_ids == (151645, 151643)  # config's first, then generation_config's new ones
    assert cfg.torch_dtype == "bfloat16" and cfg.model_type == "qwen2_5_vl"
    assert cfg.architectures == ("Qwen2_5_VLForConditionalGeneration",)


def test_classic_3b_layout_is_tied(tmp_path: Path) -> None:
    cfg = ModelConfig.from_json(write_config(tmp_path, CLASSIC_3B))
    assert cfg.text.tie_word_embeddings
    assert (cfg.text.hidden_size, cfg.text.num_key_value_heads, cfg.text.head_dim) == (2048, 2, 128)
    assert cfg.vision.out_hidden_size == 2048 and cfg.eos_token_ids == (151645,)


def test_transformers5_layout_from_save_pretrained(tmp_path: Path) -> None:
    hf_config(SPECS["gqa3_win112_tied"]).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert "text_config" in raw and "rope_parameters" in raw["text_config"]  # really the new layout
    cfg = ModelConfig.from_json(tmp_path)  # a directory is accepted too
    assert (cfg.text.hidden_size, cfg.text.num_attention_heads, cfg.text.num_key_value_heads) == (48, 6, 2)
    assert cfg.text.mrope_section == (1, 1, 2) and cfg.text.rope_theta == 10000.0 and cfg.text.tie_word_embeddings
    assert cfg.vision.fullatt_block_indexes == (1, 3) and cfg.vision.window_size == 112
    assert cfg.vision.in_chans == 3 and cfg.torch_dtype == "float32" and cfg.eos_token_ids == (294,)


def test_transformers4_layout_with_both_copies(tmp_path: Path) -> None:
    """transformers 4.5x wrote text_config and kept the flat fields; text_config wins."""
    raw = copy.deepcopy(CLASSIC_7B)
    raw["text_config"] = {"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4,
                          "rope_scaling": {"type": "default", "mrope_section": [16, 24, 24]}, "rope_theta": 5e5}
    raw["num_key_value_heads"] = 7  # stale flat copy, overridden by text_config
    cfg = ModelConfig.from_json(write_config(tmp_path, raw))
    assert cfg.text.num_key_value_heads == 4 and cfg.text.rope_theta == 5e5
    assert cfg.text.vocab_size == 152064  # only in the flat copy
    raw["text_config"]["num_key_value_heads"] = 3
    with pytest.raises(ModelFormatError, match="'text_config.num_key_value_heads'"):
        ModelConfig.from_json(write_config(tmp_path, raw))
    raw["text_config"]["num_key_value_heads"] = 4
    raw["intermediate_size"] = -1
    with pytest.raises(ModelFormatError, match="field 'intermediate_size'"):  # named where it was found
        ModelConfig.from_json(write_config(tmp_path, raw))


def mutate(path: str, value: object) -> dict:
    raw = copy.deepcopy(CLASSIC_7B)
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return raw


BAD_CONFIGS = [
    ("num_attention_heads", 27, ModelFormatError, "num_attention_heads"),
    ("num_key_value_heads", 3, ModelFormatError, "num_key_value_heads"),
    ("rope_scaling.mrope_section", [16, 24, 16], ModelFormatError, "mrope_section"),
    ("rope_scaling.mrope_section", [64, 0], ModelFormatError, "mrope_section"),
    ("rope_scaling.type", "yarn", UnsupportedModelError, "yarn"),
    ("head_dim", 64, ModelFormatError, "head_dim"),
    ("hidden_size", KeyError, ModelFormatError, "'hidden_size' is missing"),
    ("vocab_size", "big", ModelFormatError, "vocab_size"),
    ("image_token_id", 200000, ModelFormatError, "image_token_id"),
    ("hidden_act", "relu6", ModelFormatError, "hidden_act"),
    ("torch_dtype", "int8", ModelFormatError, "torch_dtype"),
    ("use_sliding_window", True, UnsupportedModelError, "use_sliding_window"),
    ("vision_config.num_heads", 12, ModelFormatError, "vision_config.num_heads"),
    ("vision_config.num_heads", 128, ModelFormatError, "multiple of 4"),  # head_dim 10
    ("vision_config.fullatt_block_indexes", [7, 32], ModelFormatError, "fullatt_block_indexes"),
    ("vision_config.fullatt_block_indexes", [7, 7], ModelFormatError, "fullatt_block_indexes"),
    ("vision_config.out_hidden_size", 2048, ModelFormatError, "out_hidden_size"),
    ("vision_config.window_size", 14, ModelFormatError, "window_size"),
    ("vision_config.depth", 0, ModelFormatError, "vision_config.depth"),
    ("vision_config", KeyError, ModelFormatError, "vision_config"),
    ("model_type", "llama", UnsupportedModelError, "llama"),
    ("model_type", "qwen2_vl", UnsupportedModelError, "Qwen2-VL"),
    ("architectures", ["LlamaForCausalLM"], UnsupportedModelError, "LlamaForCausalLM"),
]

BAD_IDS = [f"{field}={value}" for field, value, *_ in BAD_CONFIGS]


@pytest.mark.parametrize(("field", "value", "error", "needle"), BAD_CONFIGS, ids=BAD_IDS)
def test_bad_config_names_file_and_field(tmp_path: Path, field: str, value: object, error: type, needle: str) -> None:
    path = write_config(tmp_path, mutate(field, value))
    with pytest.raises(error) as info:
        ModelConfig.from_json(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_missing_and_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="config file not found"):
        ModelConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not readable JSON"):
        ModelConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelFormatError, match="JSON object"):
        ModelConfig.from_json(tmp_path)


def test_bad_generation_config_eos(tmp_path: Path) -> None:
    write_config(tmp_path, CLASSIC_7B, {"eos_token_id": "stop"})
    with pytest.raises(ModelFormatError, match="generation_config.json"):
        ModelConfig.from_json(tmp_path)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = ModelConfig.from_json(write_config(tmp_path, CLASSIC_7B))
    with pytest.raises(AttributeError):
        cfg.image_token_id = 1  # type: ignore[misc]
