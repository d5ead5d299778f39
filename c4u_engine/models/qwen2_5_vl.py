"""Qwen25VL: the vision tower and the language model of a Qwen2.5-VL checkpoint, plus the glue between them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import ModelConfig
from c4u_engine.models.language import LanguageModel
from c4u_engine.models.rope import image_token_count, mrope_position_ids
from c4u_engine.models.vision import VisionTower, vision_aux_inputs


class Qwen25VL(nn.Module):
    """Reference Qwen2.5-VL. Parameter names: visual.* (VisionTower) and language.* (LanguageModel)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTower(config.vision)
        self.language = LanguageModel(config.text)

    def rebuild_buffers(self) -> None:
        """Recompute the non-checkpoint buffers (rotary inverse frequencies, float32) on the parameters' device.

        Needed after building on the meta device, or after casting the whole module to a low-precision dtype.
        """
        rotary = self.language.rotary
        rotary.inv_freq = rotary.compute_inv_freq(self.language.embed_tokens.weight.device)

    def encode_images(self, pixel_values: torch.Tensor, grid_thw: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Image tokens [sum(t*h*w) / merge**2, H] for patches pixel_values [sum(t*h*w), patch_dim] of the
        images with grids grid_thw [n, 3], in order (images are independent: no attention across them)."""
        grid = grid_thw.cpu().numpy() if isinstance(grid_thw, torch.Tensor) else np.asarray(grid_thw)
        cfg = self.config.vision
        expected = (int(np.prod(grid.reshape(-1, 3), axis=1).sum()), cfg.patch_dim)
        if tuple(pixel_values.shape) != expected:
            raise InvalidInputError(
                f"pixel_values must be [sum(t*h*w), patch_dim] = {list(expected)} for grids {grid.tolist()}, "
                f"got {list(pixel_values.shape)}"
            )
        device = self.visual.patch_embed.proj.weight.device
        return self.visual(pixel_values.to(device), vision_aux_inputs(grid, cfg, device))

    def merge_image_embeddings(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_embeds: torch.Tensor
    ) -> torch.Tensor:
        """inputs_embeds with the rows at image_token_id positions replaced, in order, by image_embeds.

        input_ids [B, S], inputs_embeds [B, S, H], image_embeds [N, H]; N must equal the number of image tokens.
        """
        is_image = input_ids == self.config.image_token_id
        n_tokens = int(is_image.sum())
        if n_tokens != image_embeds.shape[0]:
            raise InvalidInputError(
                f"the prompt holds {n_tokens} image tokens (id {self.config.image_token_id}) "
                f"but {image_embeds.shape[0]} image embeddings were given"
            )
        return inputs_embeds.masked_scatter(is_image[..., None], image_embeds.to(inputs_embeds.dtype))

    @torch.no_grad()
    def forward_logits(
        self,
        input_ids: torch.Tensor | np.ndarray,
        pixel_values: torch.Tensor | None = None,
        grid_thw: np.ndarray | torch.Tensor | None = None,
        attention_mask: torch.Tensor | np.ndarray | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] (float32) of a whole prompt [S] or [B, S] with its images, no cache (for tests)."""
        ids = torch.as_tensor(np.asarray(input_ids) if not isinstance(input_ids, torch.Tensor) else input_ids)
        ids = ids[None] if ids.ndim == 1 else ids
        device = self.language.embed_tokens.weight.device
        ids = ids.to(device=device, dtype=torch.long)
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else torch.as_tensor(attention_mask)
        mask = mask.reshape(ids.shape).to(device=device, dtype=torch.bool)
        grid = None
        if grid_thw is not None:
            grid = grid_thw.cpu().numpy() if isinstance(grid_thw, torch.Tensor) else np.asarray(grid_thw)
        embeds = self.language.embed(ids)
        if pixel_values is not None:
            if grid is None:
                raise InvalidInputError("pixel_values given without grid_thw")
            image_embeds = self.encode_images(pixel_values, grid)
            embeds = self.merge_image_embeddings(ids, embeds, image_embeds)
        elif grid is not None and image_token_count(grid, self.config.vision.spatial_merge_size).sum():
            raise InvalidInputError("grid_thw given without pixel_values")
        positions, _ = mrope_position_ids(ids.cpu().numpy(), grid, self.config, mask.cpu().numpy())
        keys, values = self.language.empty_cache(ids.shape[0], device, embeds.dtype)
        logits, _, _ = self.language(embeds, torch.from_numpy(positions).to(device), keys, values, mask)
        return logits
