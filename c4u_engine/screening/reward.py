"""RFFT (JD, ECCV 2024): the screening model as a differentiable reward for fine-tuning an image generator, and the
consistency-condition loss that keeps the reward from being reached by degenerate backgrounds. torch, imported lazily.

Recipe (the paper's): at one of the last DDIM steps, take the generator's predicted x0 (`predicted_x0`), score it
with `UsabilityReward` (its loss is the cross-entropy toward "available", i.e. -log P(available)), and add
`consistency_condition_loss` between the tuned and the frozen reference model's classifier-free-guidance directions
g = -(eps(x_t, c) - eps(x_t, empty)) / sqrt(1 - alpha_bar_t). Only the ControlNet is trained: freeze the UNet and the
reward network (UsabilityReward freezes its own weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from c4u_engine.screening.model_dir import CONFIG_FILE, WEIGHTS_FILE, read_screen_config
from c4u_engine.screening.preprocess import product_planes, text_ids


def load_rfnet(model_dir: str | Path | None = None):
    """The torch RFNet of a screening model directory (default: the built-in one), in eval mode."""
    from safetensors.torch import load_file

    from c4u_engine.errors import ScreeningModelError
    from c4u_engine.screening.model_dir import BUILTIN_SCREEN_DIR
    from c4u_engine.screening.rfnet import RFNet, RFNetConfig

    d = Path(model_dir) if model_dir is not None else BUILTIN_SCREEN_DIR
    config = read_screen_config(d, need=WEIGHTS_FILE)
    try:
        net = RFNet(RFNetConfig(**config["model"]))
    except (TypeError, ValueError) as exc:  # unknown fields, or sizes this network cannot have
        raise ScreeningModelError(f"{d / CONFIG_FILE}: its model block does not describe an RFNet: {exc}") from None
    try:
        net.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
    except RuntimeError as exc:
        raise ScreeningModelError(f"{d / WEIGHTS_FILE} does not fit the model in {d / CONFIG_FILE}: {exc}") from None
    return net.eval()


def differentiable_planes(images: Any, side: int):
    """torch [B, 4, side, side] float in 0..255 from images [B, 3, H, W] in [0, 1]: RGB resized and the edge
    channel, as preprocess.generated_planes computes them (without its rounding; resizing by torch, not Pillow)."""
    import torch
    from torch.nn import functional as F

    x = images.clamp(0, 1) * 255.0
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    luma = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)[:, None, None]).sum(1)
    gx = F.pad(luma[:, :, 2:] - luma[:, :, :-2], (1, 1))
    gy = F.pad(luma[:, 2:, :] - luma[:, :-2, :], (0, 0, 1, 1))
    edge = ((gx * gx + gy * gy + 1e-6).sqrt() * 0.5).clamp(0, 255)
    return torch.cat([x, edge[:, None]], 1)


class UsabilityReward:
    """P(available) of generated images [B, 3, H, W] in [0, 1] for one product (its description and, optionally,
    its cut-out), differentiable with respect to the images. The network's own weights are frozen."""

    def __init__(self, net, text: str, product: Any = None) -> None:
        import torch

        from c4u_engine.screening.product_image import load_product_image

        self.net = net.eval().requires_grad_(False)
        c = net.config
        self.side = c.side
        self.text = torch.from_numpy(text_ids(text))[None]
        planes = product_planes(load_product_image(product)) if product is not None else \
            np.zeros((4, c.side, c.side), np.uint8)
        self.product = torch.from_numpy(planes)[None]
        self.has_product = torch.tensor([1.0 if product is not None else 0.0])

    def probabilities(self, images):
        b = images.shape[0]
        planes = differentiable_planes(images, self.side)
        logits = self.net(planes, self.product.expand(b, -1, -1, -1), self.text.expand(b, -1),
                          self.has_product.expand(b))
        return logits.softmax(-1)

    def __call__(self, images):
        """P(available) [B]."""
        return self.probabilities(images)[:, 0]

    def loss(self, images):
        """Cross-entropy toward "available": mean of -log P(available)."""
        import torch
        from torch.nn import functional as F

        b = images.shape[0]
        planes = differentiable_planes(images, self.side)
        logits = self.net(planes, self.product.expand(b, -1, -1, -1), self.text.expand(b, -1),
                          self.has_product.expand(b))
        return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=logits.device))


def predicted_x0(x_t, eps, alpha_bar_t):
    """DDIM's x0 estimate: (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5


def guidance_direction(eps_cond, eps_uncond, alpha_bar_t):
    """g = -(eps(x_t, c) - eps(x_t, empty)) / sqrt(1 - alpha_bar_t): the classifier-free-guidance direction."""
    return -(eps_cond - eps_uncond) / (1 - alpha_bar_t) ** 0.5


def consistency_condition_loss(eps_cond, eps_uncond, ref_eps_cond, ref_eps_uncond, alpha_bar_t):
    """L_CC = || g_tuned - g_ref ||^2 (mean over elements). The reference terms come from the frozen model and are
    detached here, so gradients reach only the tuned model."""
    g = guidance_direction(eps_cond, eps_uncond, alpha_bar_t)
    g_ref = guidance_direction(ref_eps_cond, ref_eps_uncond, alpha_bar_t).detach()
    return ((g - g_ref) ** 2).mean()
