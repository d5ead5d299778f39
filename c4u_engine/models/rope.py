"""Multimodal rotary position ids (M-RoPE) for Qwen2.5-VL, in numpy (the runtime path needs no torch).

Text tokens advance one position on all three axes (temporal, height, width). The tokens of an image with
merged grid (t, h, w) take positions start + (ti, hi, wi); the text after it resumes at start + max(h, w).
This reproduces transformers' Qwen2_5_VLModel.get_rope_index (5.x) for images. For still images (t == 1,
what Qwen's processor produces) it also agrees with the 4.x rule.
"""

from __future__ import annotations

import numpy as np

from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import ModelConfig


def image_token_count(grid_thw: np.ndarray, spatial_merge_size: int) -> np.ndarray:
    """Language tokens per image: t * h * w / merge**2 for each row of grid_thw [n, 3]."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    return grid[:, 0] * (grid[:, 1] // spatial_merge_size) * (grid[:, 2] // spatial_merge_size)


def mrope_position_ids(
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray | None,
    config: ModelConfig,
    attention_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """3-D position ids for a prompt with images.

    input_ids: [S] or [B, S] token ids. image_grid_thw: [n, 3] patch grids of the images in order of
    appearance (row 0 first, then row 1, ...); None or empty when there are no images. attention_mask:
    optional [B, S] (nonzero = real token); padding gets position 0 and is skipped when counting.
    Returns (position_ids [3, B, S] int64, rope_deltas [B] int64) where rope_delta = max position + 1 - real
    length, so the token at real index i >= real length continues at position i + rope_delta.
    Raises InvalidInputError when image tokens and grids disagree.
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise InvalidInputError(f"input_ids must be [S] or [B, S], got shape {np.asarray(input_ids).shape}")
    batch, seq = ids.shape
    if attention_mask is None:
        mask = np.ones((batch, seq), dtype=bool)
    else:
        mask = np.asarray(attention_mask) != 0
        mask = mask[None] if mask.ndim == 1 else mask
        if mask.shape != ids.shape:
            raise InvalidInputError(f"attention_mask shape {np.shape(attention_mask)} != input_ids shape {ids.shape}")
    merge = config.vision.spatial_merge_size
    grids = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw, np.int64)
    grids = grids.reshape(-1, 3)
    if (grids[:, 1:] % merge).any() or (grids <= 0).any():
        raise InvalidInputError(f"image grids must be positive with h, w divisible by {merge}, got {grids.tolist()}")

    positions = np.zeros((3, batch, seq), dtype=np.int64)
    deltas = np.zeros(batch, dtype=np.int64)
    next_image = 0
    for b in range(batch):
        row = ids[b][mask[b]]
        row_pos, next_image = _row_positions(row, grids, next_image, config.image_token_id, merge)
        positions[:, b, mask[b]] = row_pos
        deltas[b] = (row_pos.max() + 1 - len(row)) if len(row) else 0
    if next_image != len(grids):
        raise InvalidInputError(f"{len(grids)} image grids given but the prompt holds image tokens for {next_image}")
    return positions, deltas


def _row_positions(
    row: np.ndarray, grids: np.ndarray, next_image: int, image_token_id: int, merge: int
) -> tuple[np.ndarray, int]:
    """Positions [3, len(row)] of one row's real tokens; loops over images, not tokens."""
    out = np.empty((3, len(row)), dtype=np.int64)
    image_slots = np.flatnonzero(row == image_token_id)
    i, current = 0, 0
    while i < len(row):
        k = np.searchsorted(image_slots, i)
        j = int(image_slots[k]) if k < len(image_slots) else len(row)  # next image token (or the end)
        out[:, i:j] = current + np.arange(j - i)
        current += j - i
        if j == len(row):
            break
        if next_image >= len(grids):
            raise InvalidInputError(f"the prompt holds more image tokens than the {len(grids)} image grids given")
        t, h, w = (int(v) for v in grids[next_image])
        h, w = h // merge, w // merge
        count = t * h * w
        if j + count > len(row) or not (row[j : j + count] == image_token_id).all():
            raise InvalidInputError(
                f"image {next_image} (grid {grids[next_image].tolist()}) needs {count} consecutive image tokens "
                f"at position {j}; the prompt has fewer"
            )
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        out[:, j : j + count] = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + current
        current += max(h, w)
        i = j + count
        next_image += 1
    return out, next_image


def text_position_ids(start: int | np.ndarray, length: int) -> np.ndarray:
    """Positions for `length` text tokens continuing at `start` ([B] or scalar): [3, B, length] int64.

    Text advances equally on the three axes, so a decode step after a prefill of real length L uses
    start = L + rope_delta (equivalently the prefill's max position + 1).
    """
    starts = np.atleast_1d(np.asarray(start, dtype=np.int64))
    if starts.ndim != 1 or length < 0:
        raise InvalidInputError(f"start must be a scalar or [B] and length >= 0, got {np.shape(start)}, {length}")
    pos = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.broadcast_to(pos[None], (3, *pos.shape)).copy()


def next_positions(position_ids: np.ndarray) -> np.ndarray:
    """The position the next token of each row takes: max over axes and tokens + 1 -> [B] int64.

    Padding positions are 0 (as mrope_position_ids writes them) and so never raise the maximum.
    """
    pos = np.asarray(position_ids, dtype=np.int64)
    if pos.ndim != 3 or pos.shape[0] != 3:
        raise InvalidInputError(f"position_ids must be [3, B, S], got shape {pos.shape}")
    if pos.shape[2] == 0:
        return np.zeros(pos.shape[1], dtype=np.int64)
    return pos.max(axis=(0, 2)) + 1
