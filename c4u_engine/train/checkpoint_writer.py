"""Writing a complete Hugging Face-layout Qwen2.5-VL checkpoint directory without transformers.

    config.json              transformers-5 layout (model_spec.config_dict)
    generation_config.json   stop tokens
    preprocessor_config.json Qwen2-VL image processor, 112 px budget
    tokenizer.json, tokenizer_config.json, chat_template.json
    c4u_prompt.json          the checkpoint's own comparison prompt (engine.prompt.PromptTemplate)
    c4u_model_spec.json      the ModelSpec it was built from
    model.safetensors        weights under the classic Hub names: visual.*, model.*, lm_head.weight (absent when tied)

Both c4u_engine.Engine and transformers' Qwen2_5_VLForConditionalGeneration load the result.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from c4u_engine.engine.chat_template import QWEN2_5_VL_CHAT_TEMPLATE
from c4u_engine.engine.prompt import PromptTemplate
from c4u_engine.errors import InvalidInputError, ModelFormatError
from c4u_engine.models.checkpoint_files import SINGLE_FILE, internal_name
from c4u_engine.models.config import ModelConfig
from c4u_engine.train.model_spec import (
    BUILTIN_PROMPT, ModelSpec, config_dict, generation_dict, load_trainable, padded_vocab_size, preprocessor_dict,
)
from c4u_engine.train.tokenizer_training import save_tokenizer, tokenizer_config

SPEC_FILE = "c4u_model_spec.json"
PROMPT_FILE = "c4u_prompt.json"
_NEEDED_IDS = ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
               "<|vision_end|>")


def hf_tensor_name(name: str) -> str:
    """The classic Hub name of one of Qwen25VL's parameters (inverse of checkpoint_files.internal_name)."""
    if name == "language.lm_head.weight":
        hf = "lm_head.weight"
    elif name.startswith("language."):
        hf = "model." + name[len("language."):]
    elif name.startswith("visual."):
        hf = name
    else:
        raise ModelFormatError(f"parameter {name!r} belongs to neither visual.* nor language.*")
    if internal_name(hf) != name:
        raise ModelFormatError(f"parameter {name!r} would be saved as {hf!r}, which loads back as "
                               f"{internal_name(hf)!r}")
    return hf


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_assets(out_dir: str | os.PathLike[str], tokenizer: Tokenizer, spec: ModelSpec,
                 prompt: PromptTemplate = BUILTIN_PROMPT) -> ModelConfig:
    """Write every file of the checkpoint except the weights; return the ModelConfig the engine will read from it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = {}
    for token in _NEEDED_IDS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise InvalidInputError(f"write_assets: the tokenizer lacks {token!r}")
        ids[token] = token_id
    vocab = padded_vocab_size(tokenizer.get_vocab_size(with_added_tokens=True))
    _write_json(out / "config.json", config_dict(spec, ids, vocab))
    _write_json(out / "generation_config.json", generation_dict(ids))
    _write_json(out / "preprocessor_config.json", preprocessor_dict(spec))
    save_tokenizer(tokenizer, str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json",
                tokenizer_config(tokenizer, QWEN2_5_VL_CHAT_TEMPLATE, spec.max_position_embeddings))
    _write_json(out / "chat_template.json", {"chat_template": QWEN2_5_VL_CHAT_TEMPLATE})
    (out / PROMPT_FILE).write_text(prompt.to_json() + "\n", encoding="utf-8")
    _write_json(out / SPEC_FILE, spec.to_dict())
    return ModelConfig.from_json(out / "config.json")


def save_weights(model: torch.nn.Module, out_dir: str | os.PathLike[str]) -> Path:
    """Write model.safetensors (float32, Hub names), replacing any previous file atomically."""
    path = Path(out_dir) / SINGLE_FILE
    tensors = {hf_tensor_name(k): v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return path


def write_checkpoint(out_dir: str | os.PathLike[str], model: torch.nn.Module, tokenizer: Tokenizer,
                     spec: ModelSpec, prompt: PromptTemplate = BUILTIN_PROMPT) -> Path:
    """The whole directory for `model`, which must have been built from the config these assets describe."""
    config = write_assets(out_dir, tokenizer, spec, prompt)
    if getattr(model, "config", None) != config:
        raise InvalidInputError(f"write_checkpoint: the model's config differs from the one written to {out_dir}; "
                                "build the model from write_assets' config")
    save_weights(model, out_dir)
    return Path(out_dir)


def copy_assets(src_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Copy a checkpoint's non-weight files (config, tokenizer, prompt, ...) into out_dir."""
    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.suffix == ".json" and not path.name.endswith(".index.json"):
            shutil.copyfile(path, out / path.name)


def fork_checkpoint(init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], device: str = "cpu"
                    ) -> torch.nn.Module:
    """Start a training stage from init_dir: out_dir gets its assets and weights; returns the trainable model."""
    if not (Path(init_dir) / "config.json").is_file():
        raise InvalidInputError(f"{init_dir}: no checkpoint to start from (config.json missing)")
    copy_assets(init_dir, out_dir)
    model = load_trainable(init_dir, device)
    save_weights(model, out_dir)
    return model


def load_spec(model_dir: str | os.PathLike[str]) -> ModelSpec:
    """The ModelSpec a checkpoint written here was built from."""
    path = Path(model_dir) / SPEC_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (not a checkpoint written by c4u_engine.train)")
    return ModelSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))

