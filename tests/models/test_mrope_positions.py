"""M-RoPE position ids (numpy) against transformers' get_rope_index, and the text continuation rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_qwen_checkpoints import IMAGE_TOKEN, SPECS, hf_model, mm_token_type_ids, prompt_ids

from c4u_engine.errors import InvalidInputError
from c4u_engine.models import ModelConfig, mrope_position_ids, next_positions, text_position_ids
from c4u_engine.models.rope import image_token_count


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    hf = hf_model(SPECS["kv1_win56"])
    path = tmp_path_factory.mktemp("rope")
    hf.config.save_pretrained(path)
    return hf, ModelConfig.from_json(path)


CASES = {
    "text_only": ([], [7]),
    "one_image": ([[1, 4, 6]], [3, 5]),
    "tall_image_first": ([[1, 8, 4]], [0, 2]),
    "three_images": ([[1, 4, 6], [1, 8, 4], [1, 6, 10]], [2, 1, 0, 4]),
    "image_at_end": ([[1, 2, 2], [1, 10, 6]], [4, 3, 0]),
}


@pytest.mark.parametrize("case", CASES)
def test_positions_match_transformers(models, case: str) -> None:
    hf, cfg = models
    grids, text_lens = CASES[case]
    ids = prompt_ids(grids, text_lens, seed=len(case))
    ours, deltas = mrope_position_ids(ids, np.array(grids).reshape(-1, 3), cfg)
    ids_t = torch.from_numpy(ids)[None]
    ref, ref_deltas = hf.model.get_rope_index(
        ids_t, mm_token_type_ids(ids_t), image_grid_thw=torch.tensor(grids).reshape(-1, 3) if grids else None
    )
    assert ours.dtype == np.int64 and ours.shape == (3, 1, len(ids))
    np.testing.assert_array_equal(ours, ref.numpy())
    np.testing.assert_array_equal(deltas, ref_deltas.numpy().reshape(-1))


def test_batch_with_left_padding_matches_transformers(models) -> None:
    """Rows share one list of grids in order; padding is skipped and gets position 0, as in transformers."""
    hf, cfg = models
    grids = [[1, 4, 6], [1, 8, 4], [1, 6, 10]]
    row0 = prompt_ids(grids[:1], [3, 2], seed=1)
    row1 = prompt_ids(grids[1:], [1, 4, 2], seed=2)
    width = max(len(row0), len(row1))
    ids = np.zeros((2, width), dtype=np.int64)
    mask = np.zeros((2, width), dtype=np.int64)
    for b, row in enumerate((row0, row1)):
        ids[b, width - len(row) :] = row
        mask[b, width - len(row) :] = 1
    ours, deltas = mrope_position_ids(ids, np.array(grids), cfg, attention_mask=mask)
    ids_t = torch.from_numpy(ids)
    ref, ref_deltas = hf.model.get_rope_index(
        ids_t, mm_token_type_ids(ids_t), image_grid_thw=torch.tensor(grids), attention_mask=torch.from_numpy(mask)
    )
    np.testing.assert_array_equal(ours, ref.numpy())
    np.testing.assert_array_equal(deltas, ref_deltas.numpy().reshape(-1))
    # The unpadded rows get the same positions as inside the padded batch.
    alone, _ = mrope_position_ids(row1, np.array(grids[1:]), cfg)
    np.testing.assert_array_equal(ours[:, 1, width - len(row1) :], alone[:, 0])


def test_decode_positions_continue_as_text(models) -> None:
    _, cfg = models
    grids = [[1, 6, 10]]
    ids = prompt_ids(grids, [2, 3])
    pos, deltas = mrope_position_ids(ids, np.array(grids), cfg)
    start = next_positions(pos)
    assert start.tolist() == [len(ids) + deltas[0]]  # the rope_delta rule transformers uses while decoding
    steps = text_position_ids(start, 4)
    assert steps.shape == (3, 1, 4) and steps.dtype == np.int64
    assert (steps == start[0] + np.arange(4)).all()  # the same position on all three axes
    assert text_position_ids(np.array([5, 9]), 2)[:, :, 0].tolist() == [[5, 9]] * 3


def test_image_token_count() -> None:
    assert image_token_count(np.array([[1, 4, 6], [2, 8, 4]]), 2).tolist() == [6, 16]


def test_mismatched_images_are_refused(models) -> None:
    _, cfg = models
    ids = prompt_ids([[1, 4, 6]], [2, 2])
    with pytest.raises(InvalidInputError, match="more image tokens"):
        mrope_position_ids(ids, None, cfg)
    with pytest.raises(InvalidInputError, match="2 image grids given"):
        mrope_position_ids(ids, np.array([[1, 4, 6], [1, 4, 6]]), cfg)
    with pytest.raises(InvalidInputError, match="consecutive image tokens"):
        mrope_position_ids(ids, np.array([[1, 8, 6]]), cfg)
    with pytest.raises(InvalidInputError, match="divisible"):
        mrope_position_ids(ids, np.array([[1, 5, 6]]), cfg)
    with pytest.raises(InvalidInputError, match="attention_mask"):
        mrope_position_ids(ids, np.array([[1, 4, 6]]), cfg, attention_mask=np.ones(3))
    assert (ids == IMAGE_TOKEN).sum() == 6
