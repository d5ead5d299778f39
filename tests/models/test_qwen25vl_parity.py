"""The whole model against transformers' Qwen2_5_VLForConditionalGeneration: logits and greedy generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_qwen_checkpoints import (
    SPECS,
    greedy_with_cache,
    hf_model,
    mm_token_type_ids,
    pad_rows,
    prompt_ids,
    random_pixels,
    save_classic,
)

from c4u_engine.models import load_model

TOL = 1e-4
STEPS = 16


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = {}
    for name, spec in SPECS.items():
        hf = hf_model(spec, seed=11)
        out[name] = hf, load_model(save_classic(hf, tmp_path_factory.mktemp(name)))
    return out


IMAGE_SETS = {
    "no_image": ([], [9]),
    "one_image": ([[1, 4, 6]], [5, 3]),
    "two_images": ([[1, 8, 4], [1, 6, 10]], [2, 3, 4]),
    "three_images": ([[1, 4, 6], [1, 8, 4], [1, 6, 10]], [4, 1, 2, 3]),
}


@pytest.mark.parametrize("images", IMAGE_SETS)
@pytest.mark.parametrize("spec", SPECS)
@torch.no_grad()
def test_forward_logits_match(pairs: dict, spec: str, images: str) -> None:
    hf, ours = pairs[spec]
    grids, text_lens = IMAGE_SETS[images]
    ids = torch.from_numpy(prompt_ids(grids, text_lens, seed=len(images)))[None]
    pixels = random_pixels(grids, seed=2) if grids else None
    grid_t = torch.tensor(grids) if grids else None
    ref = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid_t, mm_token_type_ids=mm_token_type_ids(ids)).logits
    got = ours.forward_logits(ids, pixels, np.array(grids) if grids else None)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max().item() < TOL


def hf_greedy(hf, ids: np.ndarray, mask: np.ndarray, pixels, grids) -> tuple[torch.Tensor, torch.Tensor]:
    ids_t = torch.from_numpy(ids)
    # transformers' generate trips over explicit pixel_values=None: pass image inputs only when there are images.
    images = {"pixel_values": pixels, "image_grid_thw": torch.tensor(grids)} if grids else {}
    out = hf.generate(
        input_ids=ids_t,
        attention_mask=torch.from_numpy(mask).long(),
        mm_token_type_ids=mm_token_type_ids(ids_t),
        **images,
        max_new_tokens=STEPS,
        eos_token_id=None,  # no early stop: compare all STEPS tokens, EOS included
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits)


@pytest.mark.parametrize(
    ("spec", "images"),
    [("kv1_win56", "two_images"), ("gqa3_win112_tied", "one_image"), ("mha_win28_nofull", "no_image")],
)
def test_greedy_decode_with_cache_matches_generate(pairs: dict, spec: str, images: str) -> None:
    hf, ours = pairs[spec]
    grids, text_lens = IMAGE_SETS[images]
    ids = prompt_ids(grids, text_lens, seed=7)[None]
    mask = np.ones_like(ids, dtype=bool)
    pixels = random_pixels(grids, seed=4) if grids else None
    ref_tokens, ref_logits = hf_greedy(hf, ids, mask, pixels, grids)
    tokens, logits = greedy_with_cache(ours, ids, mask, pixels, grids, STEPS)
    assert tokens.shape == ref_tokens.shape == (1, STEPS)
    assert torch.equal(tokens, ref_tokens)
    assert (logits - ref_logits).abs().max().item() < TOL


def test_left_padded_batch_generation_matches_generate(pairs: dict) -> None:
    """Two prompts of different lengths and images, left padded, decoded together with per-row rope deltas."""
    hf, ours = pairs["gqa2_win56_full0"]
    grids = [[1, 4, 6], [1, 8, 4], [1, 6, 10]]
    rows = [prompt_ids(grids[:1], [6, 2], seed=1), prompt_ids(grids[1:], [1, 2, 3], seed=2)]
    ids, mask = pad_rows(rows, "left")
    pixels = random_pixels(grids, seed=6)
    ref_tokens, ref_logits = hf_greedy(hf, ids, mask, pixels, grids)
    tokens, logits = greedy_with_cache(ours, ids, mask, pixels, grids, STEPS)
    assert torch.equal(tokens, ref_tokens)
    assert (logits - ref_logits).abs().max().item() < TOL
