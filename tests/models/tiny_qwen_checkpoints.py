"""Tiny random Qwen2.5-VL checkpoints built with transformers (the oracle), prompts and pixels for them.

Nothing is downloaded: configs are tiny (hidden 32-64, 2-4 layers, vocab 300) and weights random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

VOCAB = 300
VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN = 290, 291, 292, 293
EOS = 294
TEXT_TOKENS = 280  # ordinary text tokens are drawn from [0, TEXT_TOKENS)
PATCH_DIM = 3 * 2 * 14 * 14


@dataclass(frozen=True)
class TinySpec:
    """The knobs the tests vary; everything else is fixed and tiny."""

    hidden: int = 64
    heads: int = 4
    kv_heads: int = 1
    layers: int = 2
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    vision_hidden: int = 32
    vision_heads: int = 2
    vision_depth: int = 2
    window_size: int = 56
    fullatt: tuple[int, ...] = (1,)
    tie: bool = False
    extra_text: dict = field(default_factory=dict)


SPECS = {
    # one KV head, window 2x2 merged tokens, last block full attention
    "kv1_win56": TinySpec(),
    # GQA 6:2, head_dim 8, window 4x4, two full-attention blocks, tied embeddings
    "gqa3_win112_tied": TinySpec(
        hidden=48, heads=6, kv_heads=2, layers=3, mrope_section=(1, 1, 2), vision_hidden=64, vision_heads=4,
        vision_depth=4, window_size=112, fullatt=(1, 3), tie=True,
    ),
    # plain MHA, window = one merged token, no full-attention block
    "mha_win28_nofull": TinySpec(
        hidden=32, heads=2, kv_heads=2, layers=3, mrope_section=(4, 2, 2), vision_hidden=48, vision_heads=3,
        vision_depth=3, window_size=28, fullatt=(),
    ),
    # full attention in the first block, GQA 4:2
    "gqa2_win56_full0": TinySpec(
        hidden=64, heads=4, kv_heads=2, layers=2, mrope_section=(4, 2, 2), vision_hidden=32, vision_heads=2,
        vision_depth=2, window_size=56, fullatt=(0,),
    ),
}


def hf_config(spec: TinySpec) -> Qwen2_5_VLConfig:
    head_dim = spec.hidden // spec.heads
    assert 2 * sum(spec.mrope_section) == head_dim, spec
    text = dict(
        vocab_size=VOCAB, hidden_size=spec.hidden, intermediate_size=2 * spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads, max_position_embeddings=1024,
        rms_norm_eps=1e-6, bos_token_id=EOS, eos_token_id=EOS, initializer_range=0.1,
        rope_parameters={"rope_type": "default", "mrope_section": list(spec.mrope_section), "rope_theta": 10000.0},
        **spec.extra_text,
    )
    vision = dict(
        depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=3 * spec.vision_hidden // 2,
        num_heads=spec.vision_heads, out_hidden_size=spec.hidden, window_size=spec.window_size,
        fullatt_block_indexes=list(spec.fullatt), initializer_range=0.1,
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END, tie_word_embeddings=spec.tie,
    )


def hf_model(spec: TinySpec, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(hf_config(spec)).eval()
    # The default init leaves norms at 1 and biases at 0; randomise them so that a swapped norm or a dropped bias
    # would show in the comparisons.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or ".norm1." in name or ".norm2." in name or "ln_q" in name:
                param.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                param.normal_(0.0, 0.1)
    return model


def save_classic(model: Qwen2_5_VLForConditionalGeneration, path: Path, max_shard_size: str | None = None) -> Path:
    """save_pretrained: the Hub's classic names (visual.*, model.*, lm_head.weight), optionally sharded."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return path


def save_transformers_names(model: Qwen2_5_VLForConditionalGeneration, path: Path) -> Path:
    """One safetensors file with transformers' in-memory names (model.visual.*, model.language_model.*)."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]  # the tied copy shares storage with embed_tokens
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def random_pixels(grids: list[list[int]], seed: int = 0) -> torch.Tensor:
    """Random patches [sum(t*h*w), 1176] for images of the given grids."""
    gen = torch.Generator().manual_seed(seed)
    n = int(sum(t * h * w for t, h, w in grids))
    return torch.randn(n, PATCH_DIM, generator=gen)


def prompt_ids(grids: list[list[int]], text_lens: list[int], seed: int = 0) -> np.ndarray:
    """text, then for each image <|vision_start|> image_pad * (t*h*w/4) <|vision_end|> text; len(text_lens) = n + 1."""
    assert len(text_lens) == len(grids) + 1
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, TEXT_TOKENS, text_lens[0])]
    for (t, h, w), n_text in zip(grids, text_lens[1:]):
        parts += [[VISION_START], [IMAGE_TOKEN] * (t * h * w // 4), [VISION_END], rng.integers(0, TEXT_TOKENS, n_text)]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def mm_token_type_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """transformers 5 needs the modality of each token (1 = image) to build M-RoPE positions."""
    return (input_ids == IMAGE_TOKEN).to(torch.int32)


def pad_rows(rows: list[np.ndarray], side: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack token rows of different lengths, padding with token 0 on the left or right -> (ids, mask) [B, S]."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for b, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = row, True
    return ids, mask


@torch.no_grad()
def greedy_with_cache(model, ids: np.ndarray, mask: np.ndarray, pixels, grids, steps: int):
    """Prefill a (padded) batch with our model, then decode `steps` greedy tokens one at a time with the KV cache.

    Returns (tokens [B, steps], logits [steps, B, V]); logits[0] is the prefill's last-position logits.
    """
    from c4u_engine.models import mrope_position_ids, next_positions, text_position_ids

    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    lm = model.language
    embeds = lm.embed(ids_t)
    if grids:
        embeds = model.merge_image_embeddings(ids_t, embeds, model.encode_images(pixels, np.array(grids)))
    pos, _ = mrope_position_ids(ids, np.array(grids).reshape(-1, 3), model.config, attention_mask=mask)
    keys, values = lm.empty_cache(ids.shape[0])
    last = torch.from_numpy(ids.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1))[:, None]  # last real token
    logits, keys, values = lm(embeds, torch.from_numpy(pos), keys, values, mask_t, last)
    next_pos = next_positions(pos)
    tokens, all_logits = [], []
    for step in range(steps):
        all_logits.append(logits[:, -1])
        token = logits[:, -1].argmax(-1)
        tokens.append(token)
        if step == steps - 1:
            break
        mask_t = torch.cat([mask_t, torch.ones(ids.shape[0], 1, dtype=torch.bool)], dim=1)
        step_pos = torch.from_numpy(text_position_ids(next_pos, 1))
        logits, keys, values = lm(lm.embed(token[:, None]), step_pos, keys, values, mask_t)
        next_pos = next_pos + 1
    return torch.stack(tokens, 1), torch.stack(all_logits)
