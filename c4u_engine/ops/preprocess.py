"""Batched Qwen2-VL image preprocessing: the Python face of _C.preprocess_cpu / _C.preprocess_cuda.

Output equals transformers' Qwen2VLImageProcessorPil (Pillow BICUBIC resize on uint8, rescale, normalize, temporal
duplication, patchify, concatenated over images): pixel_values float32 [sum of patches, 3 * T * P * P] and
image_grid_thw int64 [n, 3]. Every argument is checked here; the native code trusts what it gets.
Kernel: csrc/preprocess.cpp, csrc/preprocess.cu; numpy/Pillow reference: c4u_engine/ops/preprocess_reference.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import DEVICES, require
from c4u_engine.ops.preprocess_params import (
    DEFAULT_PARAMS,
    MAX_ASPECT_RATIO,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PreprocessParams,
    grid_thw_for,
    smart_resize,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_ASPECT_RATIO",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PreprocessParams",
    "grid_thw_for",
    "pillow_runs_vertical_first",
    "plan_sizes",
    "preprocess",
    "preprocess_cuda",
    "smart_resize",
]


@functools.cache
def pillow_runs_vertical_first() -> bool:
    """Whether the installed Pillow runs its vertical pass first when height shrinks more than twice as much as
    width (Pillow 13 does; older Pillow always ran the horizontal pass first). The order changes the rounding, so
    the kernels follow it. Probed once on a 40x13 noise image, where the two orders give different pixels."""
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 13, 3), dtype=np.uint8))
    bicubic = Image.Resampling.BICUBIC
    direct = np.asarray(image.resize((28, 28), bicubic))
    vertical_then_horizontal = np.asarray(image.resize((13, 28), bicubic).resize((28, 28), bicubic))
    return bool(np.array_equal(direct, vertical_then_horizontal))


def _native_kwargs(params: PreprocessParams) -> dict[str, Any]:
    return {**params.native_kwargs(), "pillow_vertical_first": pillow_runs_vertical_first()}


def plan_sizes(
    sizes: Sequence[tuple[int, int]], params: PreprocessParams = DEFAULT_PARAMS
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Resized (height, width) per source size and the int64 [n, 3] grid_thw they give."""
    resized = [smart_resize(h, w, params) for h, w in sizes]
    grid = np.array([(1, h // params.patch_size, w // params.patch_size) for h, w in resized], dtype=np.int64)
    return resized, grid.reshape(len(resized), 3)


def _check_image_shape(i: int, shape: tuple[int, ...], dtype: str) -> tuple[int, int]:
    if dtype != "uint8":
        raise KernelArgumentError(f"preprocess: images[{i}] must be uint8, got {dtype}")
    if len(shape) != 3 or shape[2] != 3:
        raise KernelArgumentError(f"preprocess: images[{i}] must be [height, width, 3] RGB, got shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise KernelArgumentError(f"preprocess: images[{i}] is empty (shape {tuple(shape)})")
    return int(shape[0]), int(shape[1])


def _check_params(params: Any) -> None:
    if not isinstance(params, PreprocessParams):
        raise KernelArgumentError(f"preprocess: params must be PreprocessParams, got {type(params).__name__}")


def _check_sequence(images: Any) -> list:
    if isinstance(images, (np.ndarray, str, bytes)) or not isinstance(images, Sequence):
        raise KernelArgumentError(
            f"preprocess: images must be a sequence (list/tuple) of images, got {type(images).__name__}"
        )
    return list(images)


def _flat(pairs: Sequence[tuple[int, int]]) -> list[int]:
    return [v for pair in pairs for v in pair]


def preprocess(
    images: Sequence[np.ndarray], params: PreprocessParams = DEFAULT_PARAMS, *, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess host images (uint8 [H, W, 3] RGB, C-contiguous) in one native call.

    Returns (pixel_values float32 [sum of patches, params.patch_dim], image_grid_thw int64 [n, 3]) as numpy arrays.
    device="cuda" runs the CUDA kernel (uploading the images, downloading the result); to keep data on the GPU,
    call preprocess_cuda with CUDA tensors. Raises KernelArgumentError for bad arguments, InvalidImageError for
    sizes smart_resize refuses, BackendUnavailableError when the device cannot run here.
    """
    if device not in DEVICES:
        raise KernelArgumentError(f"preprocess: device must be one of {DEVICES}, got {device!r}")
    _check_params(params)
    images = _check_sequence(images)
    sizes = []
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise KernelArgumentError(f"preprocess: images[{i}] must be a numpy array, got {type(image).__name__}")
        sizes.append(_check_image_shape(i, image.shape, str(image.dtype)))
        if not image.flags.c_contiguous:
            raise KernelArgumentError(f"preprocess: images[{i}] must be C-contiguous (use np.ascontiguousarray)")
    resized, grid = plan_sizes(sizes, params)
    rows = int((grid[:, 1] * grid[:, 2]).sum())
    if device == "cuda":
        return _preprocess_via_cuda(images, params)
    _C = require("preprocess", "cpu")
    out = np.empty((rows, params.patch_dim), dtype=np.float32)
    if images:
        _C.preprocess_cpu(
            [image.ctypes.data for image in images], _flat(sizes), _flat(resized), out.ctypes.data, rows,
            **_native_kwargs(params),
        )
    return out, grid


def _preprocess_via_cuda(images: list[np.ndarray], params: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    require("preprocess", "cuda")
    import torch

    device_images = []
    for image in images:
        staging = torch.empty(image.shape, dtype=torch.uint8)  # a copy: torch warns on read-only numpy views
        staging.numpy()[...] = image
        device_images.append(staging.to("cuda"))
    pixel_values, grid = preprocess_cuda(device_images, params)
    return pixel_values.cpu().numpy(), grid.cpu().numpy()


def preprocess_cuda(
    images: Sequence[torch.Tensor], params: PreprocessParams = DEFAULT_PARAMS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess CUDA images (torch uint8 [H, W, 3] RGB, contiguous, all on one device) with one batched launch.

    Returns (pixel_values float32 [sum of patches, params.patch_dim], image_grid_thw int64 [n, 3]), both on the
    images' device, enqueued on its current stream (asynchronous like any torch op).
    """
    _check_params(params)
    images = _check_sequence(images)
    if not images:
        raise KernelArgumentError("preprocess_cuda: needs at least one image (the device comes from the images)")
    _C = require("preprocess_cuda", "cuda")
    import torch

    sizes = []
    device = None
    for i, image in enumerate(images):
        if not isinstance(image, torch.Tensor):
            raise KernelArgumentError(
                f"preprocess_cuda: images[{i}] must be a torch tensor, got {type(image).__name__}"
            )
        if image.device.type != "cuda":
            raise KernelArgumentError(f"preprocess_cuda: images[{i}] is on {image.device}, expected a CUDA device")
        device = device or image.device
        if image.device != device:
            raise KernelArgumentError(f"preprocess_cuda: images[{i}] is on {image.device}, images[0] on {device}")
        sizes.append(_check_image_shape(i, tuple(image.shape), str(image.dtype).removeprefix("torch.")))
        if not image.is_contiguous():
            raise KernelArgumentError(f"preprocess_cuda: images[{i}] must be contiguous (use .contiguous())")
    resized, grid = plan_sizes(sizes, params)
    rows = int((grid[:, 1] * grid[:, 2]).sum())
    kwargs = _native_kwargs(params)
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device)
        out = torch.empty((rows, params.patch_dim), dtype=torch.float32, device=device)
        workspace_bytes = _C.preprocess_cuda_workspace_bytes(_flat(sizes), _flat(resized), **kwargs)
        # The caching allocator hands out 512-byte aligned blocks, on this stream: reuse after us is ordered.
        workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
        _C.preprocess_cuda(
            [image.data_ptr() for image in images], _flat(sizes), _flat(resized), out.data_ptr(), rows,
            workspace.data_ptr(), workspace_bytes, stream.cuda_stream, **kwargs,
        )
    return out, torch.from_numpy(grid).to(device)
