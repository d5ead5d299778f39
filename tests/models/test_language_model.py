"""LanguageModel's explicit-cache contract: chunked prefill, padding on either side, logits_index, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_qwen_checkpoints import SPECS, greedy_with_cache, hf_model, pad_rows, prompt_ids, random_pixels, save_classic

from c4u_engine.errors import InvalidInputError
from c4u_engine.models import load_model, mrope_position_ids


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return load_model(save_classic(hf_model(SPECS["gqa3_win112_tied"], seed=5), tmp_path_factory.mktemp("lm")))


def prompt_inputs(model, grids: list[list[int]], text_lens: list[int], seed: int):
    ids = prompt_ids(grids, text_lens, seed=seed)[None]
    ids_t = torch.from_numpy(ids)
    embeds = model.language.embed(ids_t)
    if grids:
        image_embeds = model.encode_images(random_pixels(grids, seed=seed), np.array(grids))
        embeds = model.merge_image_embeddings(ids_t, embeds, image_embeds)
    pos, _ = mrope_position_ids(ids, np.array(grids).reshape(-1, 3), model.config)
    return ids, embeds, torch.from_numpy(pos)


@torch.no_grad()
def test_chunked_prefill_equals_one_shot(model) -> None:
    """Feeding the prompt in chunks through the cache (cuts inside an image too) gives the one-shot logits."""
    lm = model.language
    _, embeds, pos = prompt_inputs(model, [[1, 4, 6], [1, 8, 4]], [3, 2, 4], seed=1)
    seq = embeds.shape[1]
    keys, values = lm.empty_cache(1)
    full, full_keys, _ = lm(embeds, pos, keys, values, torch.ones(1, seq, dtype=torch.bool))
    assert full_keys[0].shape == (1, 2, seq, 8)
    pieces, start = [], 0
    for end in (5, 6, 13, seq):
        mask = torch.ones(1, end, dtype=torch.bool)
        logits, keys, values = lm(embeds[:, start:end], pos[:, :, start:end], keys, values, mask)
        pieces.append(logits)
        start = end
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() < 1e-5
    assert all((k - fk).abs().max().item() < 1e-5 for k, fk in zip(keys, full_keys))


@torch.no_grad()
def test_frozen_slots_are_attended_and_not_returned(model) -> None:
    """The cache split into frozen then past gives the logits of the whole cache as past; the returned caches hold
    only past + new. Bad frozen inputs get a typed error naming them."""
    lm = model.language
    _, embeds, pos = prompt_inputs(model, [[1, 4, 6]], [3, 2], seed=3)
    seq = embeds.shape[1]
    keys, values = lm.empty_cache(1)
    _, keys, values = lm(embeds[:, :-1], pos[:, :, :-1], keys, values, torch.ones(1, seq - 1, dtype=torch.bool))
    mask = torch.ones(1, seq, dtype=torch.bool)
    whole, whole_keys, _ = lm(embeds[:, -1:], pos[:, :, -1:], keys, values, mask)
    f = 5
    split, split_keys, split_values = lm(embeds[:, -1:], pos[:, :, -1:], [k[:, :, f:] for k in keys],
                                         [v[:, :, f:] for v in values], mask, None,
                                         [k[:, :, :f] for k in keys], [v[:, :, :f] for v in values])
    assert (split - whole).abs().max().item() < 1e-5
    assert split_keys[0].shape[2] == seq - f and (split_keys[0] - whole_keys[0][:, :, f:]).abs().max().item() < 1e-6
    past_k, past_v = [k[:, :, f:] for k in keys], [v[:, :, f:] for v in values]
    frozen_k, frozen_v = [k[:, :, :f] for k in keys], [v[:, :, :f] for v in values]
    step = (embeds[:, -1:], pos[:, :, -1:])
    with pytest.raises(InvalidInputError, match="go together"):
        lm(*step, past_k, past_v, mask, None, frozen_k)
    with pytest.raises(InvalidInputError, match=r"frozen_values\[1\]"):
        lm(*step, past_k, past_v, mask, None, frozen_k, [frozen_v[0], frozen_v[1][:, :, :2], frozen_v[2]])
    with pytest.raises(InvalidInputError, match="attention_mask"):  # the mask must cover the frozen slots too
        lm(*step, past_k, past_v, mask[:, f:], None, frozen_k, frozen_v)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded_rows(model, side: str) -> None:
    """Prefill + 6 decode steps of a padded batch give each row's unpadded logits (pads never leak, no NaN)."""
    grids = [[1, 4, 6], [1, 8, 4], [1, 6, 10]]
    rows = [prompt_ids(grids[:1], [2, 1], seed=3), prompt_ids(grids[1:], [4, 3, 5], seed=4)]
    pixels = random_pixels(grids, seed=8)
    ids, mask = pad_rows(rows, side)
    assert not mask.all()
    tokens, logits = greedy_with_cache(model, ids, mask, pixels, grids, 6)
    assert torch.isfinite(logits).all()
    split = 4 * 6  # the patches of image 0 (grid 1x4x6) come first
    for b, (row, row_grids, row_pixels) in enumerate(
        zip(rows, (grids[:1], grids[1:]), (pixels[:split], pixels[split:]))
    ):
        alone_tokens, alone_logits = greedy_with_cache(model, row[None], np.ones((1, len(row)), bool), row_pixels,
                                                       row_grids, 6)
        assert torch.equal(tokens[b], alone_tokens[0])
        assert (logits[:, b] - alone_logits[:, 0]).abs().max().item() < 1e-4


@torch.no_grad()
def test_padding_rows_stay_finite(model) -> None:
    """A left-padding query sees only itself: its row is finite instead of the NaN of a fully masked softmax."""
    lm = model.language
    _, embeds, pos = prompt_inputs(model, [], [6], seed=2)
    mask = torch.tensor([[False, False, True, True, True, True]])
    keys, values = lm.empty_cache(1)
    logits, keys, _ = lm(embeds, pos, keys, values, mask)
    assert torch.isfinite(logits).all() and all(torch.isfinite(k).all() for k in keys)


@torch.no_grad()
def test_logits_index_selects_positions(model) -> None:
    lm = model.language
    _, embeds, pos = prompt_inputs(model, [[1, 4, 6]], [3, 4], seed=6)
    mask = torch.ones(1, embeds.shape[1], dtype=torch.bool)
    all_logits, _, _ = lm(embeds, pos, *lm.empty_cache(1), mask)
    index = torch.tensor([[0, 7, embeds.shape[1] - 1]])
    picked, _, _ = lm(embeds, pos, *lm.empty_cache(1), mask, index)
    assert picked.shape == (1, 3, model.config.text.vocab_size)
    assert (picked - all_logits[:, index[0]]).abs().max().item() < 1e-5


@torch.no_grad()
def test_bad_inputs_are_refused(model) -> None:
    lm = model.language
    _, embeds, pos = prompt_inputs(model, [], [4], seed=2)
    keys, values = lm.empty_cache(1)
    ok_mask = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(InvalidInputError, match="attention_mask"):
        lm(embeds, pos, keys, values, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="position_ids"):
        lm(embeds, pos[:, :, :3], keys, values, ok_mask)
    with pytest.raises(InvalidInputError, match="past key"):
        lm(embeds, pos, keys[:1], values, ok_mask)
    with pytest.raises(InvalidInputError, match=r"past_keys\[1\]"):
        lm(embeds, pos, [keys[0], torch.zeros(1, 2, 0, 4), keys[2]], values, ok_mask)
    with pytest.raises(InvalidInputError, match="inputs_embeds"):
        lm(embeds[..., :5], pos, keys, values, ok_mask)
    with pytest.raises(InvalidInputError, match="logits_index"):
        lm(embeds, pos, keys, values, ok_mask, torch.tensor([1, 2]))
    ids = torch.from_numpy(prompt_ids([[1, 4, 6]], [1, 1]))[None]
    with pytest.raises(InvalidInputError, match="6 image tokens"):
        model.merge_image_embeddings(ids, lm.embed(ids), torch.zeros(5, model.config.text.hidden_size))


@pytest.mark.slow
def test_forward_exports_with_dynamic_batch_and_lengths(model) -> None:
    """torch.export with dynamic B, S and P: the cache-as-tensors signature has no data-dependent Python."""
    lm, cfg = model.language, model.config.text
    torch.manual_seed(0)

    def inputs(batch: int, new: int, past: int) -> tuple:
        kv = (batch, cfg.num_key_value_heads, past, cfg.head_dim)
        mask = torch.ones(batch, past + new, dtype=torch.bool)
        mask[0, : past // 2] = False  # some padding in row 0
        return (torch.randn(batch, new, cfg.hidden_size), torch.arange(new).expand(3, batch, new) + past,
                [torch.randn(kv) for _ in lm.layers], [torch.randn(kv) for _ in lm.layers], mask, None)

    dim = torch.export.Dim
    b, s, p = dim("batch", max=64), dim("new", max=4096), dim("past", max=8192)
    cache = [{0: b, 2: p}] * len(lm.layers)
    shapes = ({0: b, 1: s}, {1: b, 2: s}, cache, cache, {0: b, 1: dim.AUTO}, None)
    with torch.no_grad():
        program = torch.export.export(lm, inputs(2, 5, 3), dynamic_shapes=shapes)
        other = inputs(3, 1, 7)
        exported, eager = program.module()(*other), lm(*other)
    assert (exported[0] - eager[0]).abs().max().item() < 1e-5
    assert all(torch.equal(x, y) for x, y in zip(exported[1], eager[1]))
