"""The checkpoint writer: a directory c4u_engine.Engine and transformers both load, with the same logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from c4u_engine.api import Engine
from c4u_engine.data import load_pairs
from c4u_engine.errors import InvalidInputError, ModelFormatError
from c4u_engine.models.checkpoint_files import internal_name
from c4u_engine.models.config import ModelConfig
from c4u_engine.train.checkpoint_writer import fork_checkpoint, hf_tensor_name, load_spec, write_checkpoint
from c4u_engine.train.model_spec import BUILTIN_PROMPT, ModelSpec, build_model, preprocessor_dict


@pytest.fixture(scope="module")
def engine(tiny_train_ckpt) -> Engine:
    return Engine(tiny_train_ckpt, backend="torch")


@pytest.fixture(scope="module")
def comparison(engine, train_data):
    record = load_pairs(train_data, "train")[0]
    profile = {"title": record.product_title, "queries": list(record.query)}
    return engine.comparison_messages(str(record.image_a), str(record.image_b), profile, mode="reason")


def test_files_and_names(tiny_train_ckpt, tiny_spec):
    names = {p.name for p in tiny_train_ckpt.iterdir()}
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.json", "c4u_prompt.json", "c4u_model_spec.json",
            "model.safetensors"} <= names
    assert load_spec(tiny_train_ckpt) == tiny_spec
    with safe_open(str(tiny_train_ckpt / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert all(k.startswith(("visual.", "model.")) for k in keys)  # tied: no lm_head.weight
    assert "model.embed_tokens.weight" in keys and "visual.patch_embed.proj.weight" in keys
    config = json.loads((tiny_train_ckpt / "config.json").read_text())
    assert config["text_config"]["rope_parameters"]["mrope_section"] == tiny_spec.mrope_section


@pytest.mark.parametrize("name", ["visual.blocks.0.attn.qkv.weight", "language.layers.1.mlp.up_proj.weight",
                                  "language.embed_tokens.weight", "language.lm_head.weight"])
def test_hub_names_load_back(name):
    assert internal_name(hf_tensor_name(name)) == name


def test_unknown_parameter_name_is_refused():
    with pytest.raises(ModelFormatError, match="neither"):
        hf_tensor_name("head.weight")


def test_112px_images_keep_their_size(engine, comparison):
    messages, prefix = comparison
    prompt = engine.core.session.tokenize(messages, prefix)
    assert prompt.grids.tolist() == [[1, 8, 8], [1, 8, 8]]
    assert int((prompt.ids == engine.core.session.tokenizer.image_pad_id).sum()) == 32  # 16 tokens per image
    assert preprocessor_dict(ModelSpec())["max_pixels"] == 112 * 112


def test_engine_uses_the_checkpoint_prompt_and_single_token_answers(engine, tiny_train_ckpt):
    assert engine.prompt == BUILTIN_PROMPT
    tok = Tokenizer.from_file(str(tiny_train_ckpt / "tokenizer.json"))
    assert engine.answer_token_ids == (tok.token_to_id("A"), tok.token_to_id("B"))


def test_engine_logits_equal_the_written_model(engine, comparison, tiny_train_ckpt, tiny_spec):
    messages, prefix = comparison
    model = build_model(ModelConfig.from_json(tiny_train_ckpt), seed=0, std=tiny_spec.init_std).eval()
    prompt = engine.core.session.tokenize(messages, prefix)
    from c4u_engine.ops.preprocess import preprocess

    pixels, grid = preprocess([im.pixels for im in prompt.images], engine.core.session.preprocess_params)
    ours = model.forward_logits(prompt.ids, torch.from_numpy(pixels), grid)[0, -1].numpy()
    assert np.abs(engine.logits(messages, prefix) - ours).max() < 1e-5


def test_transformers_gives_the_same_logits(engine, comparison, tiny_train_ckpt):
    from c4u_engine.reproduce import TransformersJudge

    messages, prefix = comparison
    judge = TransformersJudge(tiny_train_ckpt)
    inputs = judge.inputs(messages, prefix)
    # transformers 5 builds M-RoPE positions only when told which tokens are image tokens (its processor's output)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == judge.model.config.image_token_id).int()
    with torch.inference_mode():
        ref = judge.model(**inputs).logits[0, -1].float().numpy()
    assert inputs["input_ids"][0].tolist() == engine.core.session.tokenize(messages, prefix).ids.tolist()
    assert np.abs(engine.logits(messages, prefix) - ref).max() < 1e-4


def test_writer_refuses_a_model_of_another_config(tmp_path, tiny_train_ckpt, tiny_spec):
    tok = Tokenizer.from_file(str(tiny_train_ckpt / "tokenizer.json"))
    other = ModelSpec(**{**tiny_spec.to_dict(), "fullatt_block_indexes": (0,), "text_layers": 1})
    model = build_model(ModelConfig.from_json(tiny_train_ckpt), seed=0)
    with pytest.raises(InvalidInputError, match="config differs"):
        write_checkpoint(tmp_path, model, tok, other)


def test_fork_copies_assets_and_weights(tmp_path, tiny_train_ckpt):
    model = fork_checkpoint(tiny_train_ckpt, tmp_path / "fork")
    assert sorted(p.name for p in (tmp_path / "fork").iterdir()) == sorted(
        p.name for p in tiny_train_ckpt.iterdir() if p.suffix in (".json", ".safetensors"))
    assert all(p.requires_grad for p in model.parameters())
    with safe_open(str(tiny_train_ckpt / "model.safetensors"), "pt") as a, \
            safe_open(str(tmp_path / "fork" / "model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    with pytest.raises(InvalidInputError, match="no checkpoint to start from"):
        fork_checkpoint(tmp_path / "missing", tmp_path / "other")
