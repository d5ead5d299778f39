"""Everything the vision tower needs besides the pixels, computed from the image grids alone (numpy, no torch).

Qwen2.5-VL's ViT reorders patches so that each attention window is contiguous, rotates q/k by each patch's
(row, column), and attends within windows in most blocks and within whole images in the others. All of that
depends on the grids only, so it is computed here, outside the (exportable) forward:

- window order: merge units (2x2 patches) reordered window by window, as transformers' get_vision_window_index;
- cos / sin of the 2-D rotary per patch, already in window order;
- segment ids per patch (window order): patches attend to each other iff their segment ids are equal.
  full_segments = one id per image frame (images never attend across each other), window_segments = one per window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import ModelConfig, VisionConfig


@dataclass(frozen=True)
class VisionAuxArrays:
    """Grid-derived vision inputs; P = total patches, U = P / merge_unit merged tokens."""

    cos: np.ndarray  # [P, head_dim] float32, rows in window order
    sin: np.ndarray  # [P, head_dim] float32, rows in window order
    window_index: np.ndarray  # [U] int64: unit i of the window order is unit window_index[i] of the input
    reverse_index: np.ndarray  # [U] int64: argsort(window_index), back to the input (= processor) order
    full_segments: np.ndarray  # [P] int64, window order: one id per image frame
    window_segments: np.ndarray  # [P] int64, window order: one id per attention window


def check_grid_thw(grid_thw: np.ndarray, config: VisionConfig) -> np.ndarray:
    """grid_thw as an int64 [n, 3] array; InvalidInputError unless every t, h, w > 0 and merge divides h, w."""
    grid = np.asarray(grid_thw)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0 or not np.issubdtype(grid.dtype, np.integer):
        raise InvalidInputError(f"grid_thw must be a non-empty integer [n, 3] array, got shape {grid.shape}")
    grid = grid.astype(np.int64)
    merge = config.spatial_merge_size
    if (grid <= 0).any() or (grid[:, 1:] % merge).any():
        raise InvalidInputError(f"grid_thw rows need t, h, w > 0 with h and w divisible by {merge}: {grid.tolist()}")
    return grid


def vision_aux_arrays(grid_thw: np.ndarray, config: VisionConfig | ModelConfig) -> VisionAuxArrays:
    """Compute the vision tower's grid-derived inputs for images with patch grids grid_thw [n, 3]."""
    cfg = config.vision if isinstance(config, ModelConfig) else config
    grid = check_grid_thw(grid_thw, cfg)
    merge, unit = cfg.spatial_merge_size, cfg.merge_unit
    window = cfg.window_size // merge // cfg.patch_size  # window side in merged tokens

    rows, cols, window_index, window_sizes, frame_sizes = [], [], [], [], []
    offset = 0
    for t, h, w in grid.tolist():
        # Patch (row, col) in the processor's order: frame, merge block row, block col, row in block, col in block.
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        rows.append(np.tile(r.reshape(block).transpose(0, 2, 1, 3).ravel(), t))
        cols.append(np.tile(c.reshape(block).transpose(0, 2, 1, 3).ravel(), t))
        frame_sizes += [h * w] * t
        order, sizes = _window_order(t, h // merge, w // merge, window)
        window_index.append(order + offset)
        window_sizes += sizes
        offset += t * (h // merge) * (w // merge)

    window_index = np.concatenate(window_index)
    cos, sin = _rotary_2d(np.concatenate(rows), np.concatenate(cols), cfg)
    head_dim = cos.shape[1]
    cos = cos.reshape(-1, unit, head_dim)[window_index].reshape(-1, head_dim)
    sin = sin.reshape(-1, unit, head_dim)[window_index].reshape(-1, head_dim)
    # The window reordering keeps each frame's units together, so frame segments are unchanged by it.
    full_segments = np.repeat(np.arange(len(frame_sizes), dtype=np.int64), frame_sizes)
    window_segments = np.repeat(np.arange(len(window_sizes), dtype=np.int64), np.asarray(window_sizes) * unit)
    return VisionAuxArrays(
        cos=cos,
        sin=sin,
        window_index=window_index,
        reverse_index=np.argsort(window_index, kind="stable"),
        full_segments=full_segments,
        window_segments=window_segments,
    )


def _window_order(t: int, llm_h: int, llm_w: int, window: int) -> tuple[np.ndarray, list[int]]:
    """Merged-token indices of one image in window order, and the size of each non-empty window."""
    index = np.arange(t * llm_h * llm_w).reshape(t, llm_h, llm_w)
    n_h, n_w = -(-llm_h // window), -(-llm_w // window)
    padded = np.full((t, n_h * window, n_w * window), -1, dtype=np.int64)
    padded[:, :llm_h, :llm_w] = index
    windows = padded.reshape(t, n_h, window, n_w, window).transpose(0, 1, 3, 2, 4).reshape(t * n_h * n_w, -1)
    sizes = (windows >= 0).sum(axis=1)
    order = windows[windows >= 0]
    return order, [int(s) for s in sizes if s > 0]


def _rotary_2d(rows: np.ndarray, cols: np.ndarray, cfg: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [P, head_dim]: head_dim/4 frequencies for the row, as many for the column, the pair repeated."""
    spatial = cfg.head_dim // 2
    inv_freq = (1.0 / cfg.rope_theta ** (np.arange(0, spatial, 2, dtype=np.float32) / np.float32(spatial))).astype(
        np.float32
    )
    freqs = np.concatenate(
        [rows[:, None].astype(np.float32) * inv_freq, cols[:, None].astype(np.float32) * inv_freq], axis=1
    )
    emb = np.concatenate([freqs, freqs], axis=1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
