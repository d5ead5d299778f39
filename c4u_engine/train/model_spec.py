"""The built-in model's architecture, image size, prompt wording and initialisation.

A Qwen2.5-VL with the real model's structure at a few million parameters: a 4-block vision tower (window attention
with 2x2-merged windows, full attention in blocks 1 and 3), a 4-layer GQA decoder with M-RoPE. Images are judged at
112x112 pixels: min/max pixels keep 112x112 as it is (patch grid 8x8, 16 language tokens per image) and shrink
larger creatives to about that budget. The prompt (c4u_prompt.json) is short, so a comparison is ~100 tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from c4u_engine.engine.prompt import PromptTemplate
from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import ModelConfig
from c4u_engine.ops.preprocess_params import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

BUILTIN_PROMPT = PromptTemplate(
    system=("Judge two ad creatives for this user: compare query match, title match, text in image, models and "
            "props, layout, product subject and background, then answer "
            "<think>reasoning</think><answer>A or B</answer>."),
    question="\nWhich creative will this user click?",
)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the built-in Qwen2.5-VL. The text head_dim is text_hidden / text_heads; mrope follows it."""

    vision_depth: int = 4
    vision_hidden: int = 128
    vision_heads: int = 4
    vision_intermediate: int = 256
    window_size: int = 56  # pixels: 2x2 merged tokens per window at patch 14, merge 2
    fullatt_block_indexes: tuple[int, ...] = (1, 3)
    text_hidden: int = 256
    text_intermediate: int = 512
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    image_size: int = 112
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    init_std: float = 0.02

    def __post_init__(self) -> None:
        factor = self.patch_size * self.merge_size
        if self.image_size % factor:
            raise InvalidInputError(f"ModelSpec.image_size={self.image_size} must be a multiple of {factor}")
        if self.text_hidden % self.text_heads or (self.text_hidden // self.text_heads) % 4:
            raise InvalidInputError(f"ModelSpec: text_hidden {self.text_hidden} / text_heads {self.text_heads} must "
                                    "be a head_dim divisible by 4")

    @property
    def text_head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    @property
    def mrope_section(self) -> list[int]:
        """Qwen's split of the rotary half-dimension into (temporal, height, width): head_dim 128 -> [16, 24, 24]."""
        half = self.text_head_dim // 2
        spatial = 3 * half // 8
        return [half - 2 * spatial, spatial, spatial]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fullatt_block_indexes"] = list(self.fullatt_block_indexes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"ModelSpec: unknown fields {unknown}; valid: {sorted(known)}")
        values = dict(data)
        if "fullatt_block_indexes" in values:
            values["fullatt_block_indexes"] = tuple(values["fullatt_block_indexes"])
        return cls(**values)


def padded_vocab_size(n_tokens: int) -> int:
    """Embedding rows for a tokenizer of n_tokens ids: rounded up to a multiple of 64, as Qwen pads its vocabulary."""
    return -(-n_tokens // 64) * 64


def config_dict(spec: ModelSpec, token_ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    """config.json in the transformers-5 layout (text fields under text_config), which both transformers and
    c4u_engine.models.config read. token_ids: the ids of <|endoftext|>, <|im_end|>, <|image_pad|>, <|video_pad|>,
    <|vision_start|>, <|vision_end|>."""
    pad, eos = token_ids["<|endoftext|>"], token_ids["<|im_end|>"]
    text = {
        "attention_dropout": 0.0, "bos_token_id": pad, "eos_token_id": eos, "pad_token_id": pad,
        "hidden_act": "silu", "hidden_size": spec.text_hidden, "initializer_range": spec.init_std,
        "intermediate_size": spec.text_intermediate, "layer_types": ["full_attention"] * spec.text_layers,
        "max_position_embeddings": spec.max_position_embeddings, "max_window_layers": spec.text_layers,
        "model_type": "qwen2_5_vl_text", "num_attention_heads": spec.text_heads,
        "num_hidden_layers": spec.text_layers, "num_key_value_heads": spec.text_kv_heads, "rms_norm_eps": 1e-6,
        "rope_parameters": {"mrope_section": spec.mrope_section, "rope_theta": spec.rope_theta,
                            "rope_type": "default"},
        "sliding_window": None, "tie_word_embeddings": spec.tie_word_embeddings, "use_cache": True,
        "use_sliding_window": False, "vocab_size": vocab_size,
    }
    vision = {
        "depth": spec.vision_depth, "fullatt_block_indexes": list(spec.fullatt_block_indexes), "hidden_act": "silu",
        "hidden_size": spec.vision_hidden, "in_channels": 3, "initializer_range": spec.init_std,
        "intermediate_size": spec.vision_intermediate, "model_type": "qwen2_5_vl_vision",
        "num_heads": spec.vision_heads, "out_hidden_size": spec.text_hidden, "patch_size": spec.patch_size,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}, "spatial_merge_size": spec.merge_size,
        "temporal_patch_size": spec.temporal_patch_size, "tokens_per_second": 2, "window_size": spec.window_size,
    }
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "dtype": "float32",
        "image_token_id": token_ids["<|image_pad|>"], "model_type": "qwen2_5_vl", "text_config": text,
        "tie_word_embeddings": spec.tie_word_embeddings, "video_token_id": token_ids["<|video_pad|>"],
        "vision_config": vision, "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
    }


def preprocessor_dict(spec: ModelSpec) -> dict[str, Any]:
    """preprocessor_config.json: Qwen2-VL's image processor with a pixel budget of image_size**2."""
    pixels = spec.image_size * spec.image_size
    min_pixels = min(pixels, (spec.patch_size * spec.merge_size * 2) ** 2)
    return {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD),
        "min_pixels": min_pixels, "max_pixels": pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": pixels},
        "patch_size": spec.patch_size, "temporal_patch_size": spec.temporal_patch_size, "merge_size": spec.merge_size,
    }


def generation_dict(token_ids: dict[str, int]) -> dict[str, Any]:
    """generation_config.json: greedy, stop at <|im_end|> or <|endoftext|> (as Qwen2.5-VL lists them)."""
    pad, eos = token_ids["<|endoftext|>"], token_ids["<|im_end|>"]
    return {"bos_token_id": pad, "do_sample": False, "eos_token_id": [eos, pad], "pad_token_id": pad}


def init_weights(model: nn.Module, std: float) -> None:
    """Qwen's initialisation: normal(0, std) for linear, conv and embedding weights, zero biases, unit norms.

    (torch's defaults would give N(0, 1) embeddings, whose tied output logits start far too large.)"""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def build_model(config: ModelConfig, seed: int, std: float = 0.02):
    """A freshly initialised Qwen25VL (float32, train mode) for `config`, deterministic from `seed`."""
    from c4u_engine.models.qwen2_5_vl import Qwen25VL

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen25VL(config)
        init_weights(model, std)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.train()


def load_trainable(model_dir, device: str = "cpu"):
    """A checkpoint's Qwen25VL in float32 and train mode on device, every parameter requiring grad (load_model gives
    an inference model)."""
    from c4u_engine.models.checkpoint import load_model

    model = load_model(model_dir, device=device, dtype=torch.float32)
    for param in model.parameters():
        param.requires_grad_(True)
    return model.train()
