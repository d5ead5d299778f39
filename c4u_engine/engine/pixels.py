"""Where image preprocessing runs: on the GPU (ops.preprocess_cuda, pixel values stay on the device for the vision
tower) when the runner computes on CUDA and takes device pixels, on the CPU kernel otherwise.

Pixel values are then numpy float32 [patches, patch_dim] or a torch CUDA tensor of the same shape; grids are always
host numpy (the engine plans prompts with them). Slicing works on both; concat_pixels joins either kind.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from c4u_engine.ops.dispatch import cuda_why_not
from c4u_engine.ops.preprocess import PreprocessParams, preprocess, preprocess_cuda


def preprocess_device(runner) -> tuple[str, str | None]:
    """("cuda", None) when preprocessing can run on the runner's GPU, else ("cpu", why not)."""
    if not str(runner.device).startswith("cuda"):
        return "cpu", f"the {runner.name} runner computes on {runner.device}"
    if not runner.capabilities.device_pixels:
        return "cpu", f"the {runner.name} runner takes host pixel values"
    reason = cuda_why_not()
    return ("cpu", reason) if reason is not None else ("cuda", None)


def preprocess_images(images: Sequence[np.ndarray], params: PreprocessParams, device: str,
                      runner_device: str = "cuda") -> tuple[Any, np.ndarray]:
    """(pixel values, grid int64 [n, 3] on the host) of host uint8 images, on `device`."""
    if device != "cuda":
        return preprocess(list(images), params)
    import torch

    target = torch.device(runner_device)
    on_device = []
    for im in images:
        staging = torch.empty(im.shape, dtype=torch.uint8)  # a copy: torch warns on read-only numpy views
        staging.numpy()[...] = im
        on_device.append(staging.to(target))
    pixel_values, grid = preprocess_cuda(on_device, params)
    return pixel_values, grid.cpu().numpy()


def concat_pixels(parts: Sequence[Any]) -> Any:
    """Pixel values of several images, in order, as one array of their kind."""
    if parts and not isinstance(parts[0], np.ndarray):
        import torch

        return torch.cat(list(parts))
    return np.concatenate(parts)
