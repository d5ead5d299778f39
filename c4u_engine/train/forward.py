"""The differentiable forward pass used for training: vision tower, image merge, decoder without a cache.

Qwen25VL's own encode_images runs all images of a call as one attention problem with a block mask, which costs
(sum of patches)^2; training encodes the images in chunks to keep that quadratic term small.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from c4u_engine.errors import InvalidInputError
from c4u_engine.train.batching import IGNORE, Batch


def encode_images(model, pixel_values: torch.Tensor, grid_thw: np.ndarray, chunk: int = 16) -> list[torch.Tensor]:
    """Per-image embeddings [t*h*w / merge**2, H] (with autograd), images encoded `chunk` at a time."""
    grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    patches = grid.prod(axis=1)
    merge = model.config.vision.spatial_merge_size
    if int(patches.sum()) != pixel_values.shape[0]:
        raise InvalidInputError(f"pixel_values has {pixel_values.shape[0]} patches, grids {grid.tolist()} need "
                                f"{int(patches.sum())}")
    starts = np.concatenate([[0], np.cumsum(patches)])
    out: list[torch.Tensor] = []
    for lo in range(0, len(grid), chunk):
        hi = min(lo + chunk, len(grid))
        embeds = model.encode_images(pixel_values[starts[lo]:starts[hi]], grid[lo:hi])
        out += list(torch.split(embeds, [int(p) // (merge * merge) for p in patches[lo:hi]], dim=0))
    return out


def language_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    image_embeds: list[torch.Tensor], logits_index: torch.Tensor) -> torch.Tensor:
    """Logits [B, K, V] (float32) at logits_index of right-padded sequences whose image pads take image_embeds
    (in row-major order)."""
    device = model.language.embed_tokens.weight.device
    input_ids = input_ids.to(device)
    embeds = model.language.embed(input_ids)
    if image_embeds:
        embeds = model.merge_image_embeddings(input_ids, embeds, torch.cat(image_embeds, dim=0))
    keys, values = model.language.empty_cache(input_ids.shape[0], device, embeds.dtype)
    logits, _, _ = model.language(embeds, position_ids.to(device), keys, values, attention_mask.to(device),
                                  logits_index.to(device))
    return logits


def batch_logits(model, batch: Batch, image_chunk: int = 16) -> torch.Tensor:
    """Logits [B, K, V] predicting batch.labels."""
    device = model.language.embed_tokens.weight.device
    image_embeds = encode_images(model, batch.pixel_values.to(device), batch.grid_thw, image_chunk)
    return language_logits(model, batch.input_ids, batch.attention_mask, batch.position_ids, image_embeds,
                           batch.logits_index)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(label) per position [B, K] (0 where labels == IGNORE) under softmax(logits / temperature)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    valid = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).to(logits.device)[..., None])[..., 0]
    return picked * valid.to(logits.device)


def sequence_mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each sequence's target tokens, then over sequences (every example weighs the
    same, so a fast-form example's single answer decision is not drowned by long chains of thought)."""
    valid = (labels != IGNORE).to(logits.device)
    counts = valid.sum(dim=1)
    if bool((counts == 0).any()):
        raise InvalidInputError("a sequence of the batch has no target tokens")
    nll = -token_logprobs(logits, labels)
    return ((nll * valid).sum(dim=1) / counts).mean()
