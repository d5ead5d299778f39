"""Qwen2.5-VL vision tower: patch embed, window / full attention blocks with 2-D rotary, 2x2 patch merger.

Export-friendly by construction: everything that depends on the image grids (window order, rotary angles,
which patches may attend to which) arrives precomputed in a VisionAux (see vision_aux.py); forward is the same
sequence of tensor ops for any grid. Attention masks are built in forward from per-patch segment ids
(mask = seg[:, None] == seg[None, :]), so no [P, P] tensor crosses the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from c4u_engine.models.config import ModelConfig, VisionConfig
from c4u_engine.models.layers import GatedMLP, RMSNorm, apply_rotary
from c4u_engine.models.vision_aux import vision_aux_arrays

VISION_NORM_EPS = 1e-6  # fixed in Qwen2.5-VL (not in the config)


@dataclass(frozen=True)
class VisionAux:
    """Grid-derived vision inputs as tensors; fields as in VisionAuxArrays (vision_aux.py)."""

    cos: torch.Tensor  # [P, head_dim] float32, window order
    sin: torch.Tensor  # [P, head_dim] float32, window order
    window_index: torch.Tensor  # [P / merge_unit] int64
    reverse_index: torch.Tensor  # [P / merge_unit] int64
    full_segments: torch.Tensor  # [P] int64
    window_segments: torch.Tensor  # [P] int64

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The fields in declaration order: the positional inputs of VisionTower.forward_tensors."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def to(self, device: torch.device | str) -> VisionAux:
        return VisionAux(*(t.to(device) for t in self.tensors()))


def vision_aux_inputs(
    grid_thw: np.ndarray, config: VisionConfig | ModelConfig, device: torch.device | str = "cpu"
) -> VisionAux:
    """VisionAux for images with patch grids grid_thw [n, 3] (numpy or a CPU tensor), placed on device."""
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = grid_thw.cpu().numpy()
    arrays = vision_aux_arrays(grid_thw, config)
    return VisionAux(*(torch.from_numpy(getattr(arrays, f.name)).to(device) for f in fields(VisionAux)))


class PatchEmbed(nn.Module):
    """Conv3d with stride == kernel over [C, T, p, p] patches, i.e. one matmul over the flattened patch.

    The Conv3d weight keeps the checkpoint's shape [hidden, C, T, p, p]; forward runs it as a Linear.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        kernel = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.hidden_size, kernel_size=kernel, stride=kernel, bias=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        return F.linear(patches.to(weight.dtype), weight.reshape(weight.shape[0], -1))


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        patches = x.shape[0]
        q, k, v = self.qkv(x).reshape(patches, 3, self.num_heads, self.head_dim).permute(1, 2, 0, 3).unbind(0)
        # Rotary in float32 like transformers, then back to the activation dtype.
        q = apply_rotary(q.float(), cos, sin).to(v.dtype)
        k = apply_rotary(k.float(), cos, sin).to(v.dtype)
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)  # [1, heads, P, d]
        return self.proj(out[0].permute(1, 0, 2).reshape(patches, -1))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, VISION_NORM_EPS)
        self.norm2 = RMSNorm(cfg.hidden_size, VISION_NORM_EPS)
        self.attn = VisionAttention(cfg)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """RMSNorm, then each group of merge_unit consecutive patches concatenated and projected to the LM width."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.merged = cfg.hidden_size * cfg.merge_unit
        self.ln_q = RMSNorm(cfg.hidden_size, VISION_NORM_EPS)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged, self.merged), nn.GELU(), nn.Linear(self.merged, cfg.out_hidden_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).reshape(-1, self.merged))


class VisionTower(nn.Module):
    """patches [P, patch_dim] (Qwen processor order, images concatenated) -> merged tokens [P / 4, out_hidden]."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)
        self.full_attention = frozenset(cfg.fullatt_block_indexes)

    def forward(self, patches: torch.Tensor, aux: VisionAux) -> torch.Tensor:
        """Encode the patches of one or more images; aux = vision_aux_inputs(grid_thw, config)."""
        return self.forward_tensors(patches, *aux.tensors())

    def forward_tensors(
        self,
        patches: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        window_index: torch.Tensor,
        reverse_index: torch.Tensor,
        full_segments: torch.Tensor,
        window_segments: torch.Tensor,
    ) -> torch.Tensor:
        """forward with the VisionAux fields as separate tensors (the signature an ONNX export sees)."""
        x = self.patch_embed(patches)
        hidden = x.shape[-1]
        unit = self.config.merge_unit
        x = x.reshape(-1, unit, hidden).index_select(0, window_index).reshape(-1, hidden)
        full_mask = full_segments[:, None] == full_segments[None, :]
        window_mask = window_segments[:, None] == window_segments[None, :]
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, full_mask if i in self.full_attention else window_mask)
        return self.merger(x).index_select(0, reverse_index)
