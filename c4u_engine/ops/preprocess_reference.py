"""numpy + Pillow reference of ops.preprocess: what transformers' Qwen2VLImageProcessorPil computes, written out.

The tests judge the native kernels against this and against transformers itself. Slow by design: plain steps,
one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from c4u_engine.ops.preprocess_params import DEFAULT_PARAMS, PreprocessParams, smart_resize


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [height, width, 3] with Pillow's BICUBIC (a copy when the size is unchanged)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def normalize(image: np.ndarray, params: PreprocessParams = DEFAULT_PARAMS) -> np.ndarray:
    """uint8 [H, W, 3] -> float32: rescale in float64 then cast (transformers' rescale), then (x - mean) / std in
    float32 (transformers' normalize)."""
    rescaled = (image.astype(np.float64) * params.rescale_factor).astype(np.float32)
    mean = np.array(params.image_mean, dtype=np.float32)
    std = np.array(params.image_std, dtype=np.float32)
    return (rescaled - mean) / std


def patchify(image: np.ndarray, params: PreprocessParams = DEFAULT_PARAMS) -> np.ndarray:
    """float32 [H, W, 3] -> [(H/P) * (W/P), 3 * T * P * P] in transformers' Qwen2-VL patch order."""
    P, M, T = params.patch_size, params.merge_size, params.temporal_patch_size
    chw = image.transpose(2, 0, 1)
    c, h, w = chw.shape
    gh, gw = h // P, w // P
    patches = chw.reshape(c, gh // M, M, P, gw // M, M, P).transpose(1, 4, 2, 5, 0, 3, 6)
    patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], T, P, P))
    return patches.reshape(gh * gw, c * T * P * P)


def reference_preprocess(
    images: Sequence[np.ndarray], params: PreprocessParams = DEFAULT_PARAMS
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values float32 [sum of patches, patch_dim], image_grid_thw int64 [n, 3]) for uint8 [H, W, 3] images."""
    rows, grids = [], []
    for image in images:
        height, width = smart_resize(int(image.shape[0]), int(image.shape[1]), params)
        rows.append(patchify(normalize(resize_bicubic(image, height, width), params), params))
        grids.append((1, height // params.patch_size, width // params.patch_size))
    pixel_values = np.concatenate(rows) if rows else np.empty((0, params.patch_dim), dtype=np.float32)
    return pixel_values, np.array(grids, dtype=np.int64).reshape(len(grids), 3)
