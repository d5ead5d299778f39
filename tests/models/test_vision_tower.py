"""The vision tower against transformers, image independence, grid-derived inputs, and exportability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_qwen_checkpoints import SPECS, hf_model, random_pixels, save_classic

from c4u_engine.errors import InvalidInputError
from c4u_engine.models import load_model, vision_aux_arrays, vision_aux_inputs
from c4u_engine.models.vision import VisionTower


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """spec name -> (transformers model, our model loaded from its checkpoint)."""
    out = {}
    for name, spec in SPECS.items():
        hf = hf_model(spec, seed=3)
        out[name] = hf, load_model(save_classic(hf, tmp_path_factory.mktemp(name)))
    return out


GRIDS = {
    "one": [[1, 4, 6]],
    "two_tall_wide": [[1, 8, 4], [1, 6, 10]],
    "three_odd": [[1, 4, 6], [1, 2, 2], [1, 10, 6]],
    "two_frames": [[2, 6, 4], [1, 4, 4]],  # t > 1: frames attend separately in full-attention blocks
}


@pytest.mark.parametrize("grids", GRIDS)
@pytest.mark.parametrize("spec", SPECS)
@torch.no_grad()
def test_vision_matches_transformers(pairs: dict, spec: str, grids: str) -> None:
    hf, ours = pairs[spec]
    grid = GRIDS[grids]
    pixels = random_pixels(grid, seed=len(grids))
    ref = hf.model.visual(pixels, grid_thw=torch.tensor(grid)).pooler_output
    got = ours.encode_images(pixels, np.array(grid))
    assert got.shape == ref.shape == (sum(t * h * w for t, h, w in grid) // 4, ours.config.text.hidden_size)
    assert (got - ref).abs().max().item() < 1e-4


@torch.no_grad()
def test_images_do_not_attend_across_each_other(pairs: dict) -> None:
    _, ours = pairs["kv1_win56"]
    grid = [[1, 4, 6], [1, 8, 4], [1, 6, 10]]
    pixels = random_pixels(grid, seed=5)
    together = ours.encode_images(pixels, np.array(grid))
    alone, start = [], 0
    for g in grid:
        n = int(np.prod(g))
        alone.append(ours.encode_images(pixels[start : start + n], np.array([g])))
        start += n
    assert (together - torch.cat(alone)).abs().max().item() < 1e-5


def test_aux_arrays_are_consistent(pairs: dict) -> None:
    _, ours = pairs["kv1_win56"]  # window 56: 2x2 merged tokens
    aux = vision_aux_arrays(np.array([[1, 6, 10], [1, 4, 4]]), ours.config)
    units = (6 * 10 + 4 * 4) // 4
    assert sorted(aux.window_index.tolist()) == list(range(units))
    np.testing.assert_array_equal(aux.window_index[aux.reverse_index], np.arange(units))
    assert aux.cos.shape == aux.sin.shape == (4 * units, 16) and aux.cos.dtype == np.float32
    assert np.bincount(aux.full_segments).tolist() == [60, 16]
    # 3x5 merged tokens in 2x2 windows: sizes 4, 4, 2 / 2, 2, 1, then the 2x2 image: one window of 4.
    assert (np.bincount(aux.window_segments) // 4).tolist() == [4, 4, 2, 2, 2, 1, 4]
    # The first window holds merged tokens 0, 1 (row 0) and 5, 6 (row 1) of the 3x5 grid.
    assert aux.window_index[:4].tolist() == [0, 1, 5, 6]


def test_bad_grids_and_pixels_are_refused(pairs: dict) -> None:
    _, ours = pairs["kv1_win56"]
    for grid in (np.array([[1, 5, 4]]), np.array([[0, 4, 4]]), np.zeros((0, 3), np.int64), np.array([1, 4, 4])):
        with pytest.raises(InvalidInputError):
            vision_aux_arrays(grid, ours.config)
    with pytest.raises(InvalidInputError, match="pixel_values"):
        ours.encode_images(random_pixels([[1, 4, 4]]), np.array([[1, 4, 6]]))


def test_patch_embed_keeps_checkpoint_shape(pairs: dict) -> None:
    _, ours = pairs["kv1_win56"]
    assert tuple(ours.visual.patch_embed.proj.weight.shape) == (32, 3, 2, 14, 14)


class _Flat(torch.nn.Module):
    def __init__(self, tower: VisionTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.tower.forward_tensors(*tensors)


def test_forward_exports_with_dynamic_grids(pairs: dict, tmp_path: Path) -> None:
    """No grid-dependent Python in forward: one exported graph serves other grids and image counts."""
    _, ours = pairs["gqa3_win112_tied"]
    aux = vision_aux_inputs(np.array([[1, 4, 6]]), ours.config)
    units = torch.export.Dim("units", min=1, max=4096)
    per_patch, per_unit = {0: 4 * units}, {0: units}
    shapes = ((per_patch, per_patch, per_patch, per_unit, per_unit, per_patch, per_patch),)
    with torch.no_grad():
        program = torch.export.export(_Flat(ours.visual), (random_pixels([[1, 4, 6]]), *aux.tensors()),
                                      dynamic_shapes=shapes)
        grid = [[1, 6, 10], [1, 2, 2], [1, 8, 4]]
        pixels = random_pixels(grid, seed=9)
        other = vision_aux_inputs(np.array(grid), ours.config)
        exported = program.module()(pixels, *other.tensors())
        assert (exported - ours.visual(pixels, other)).abs().max().item() < 1e-5
