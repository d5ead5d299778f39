"""The onnxruntime runner's packed decode KV (runners/decode_kv.py): rows packed from slot 0 whatever the engine's
layout, appends in place that never overwrite what an older owner reads, the engine's mask checked."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.runners import decode_kv
from c4u_engine.runners.decode_kv import DecodeKV

HEADS, DIM, LAYERS = 2, 3, 2


def _engine_kv(rng, rows: int, frozen: int, past: int):
    """An engine-layout KV in two segments (frozen, past) of random K / V per layer."""
    def seg(n):
        return ([rng.standard_normal((rows, HEADS, n, DIM)).astype(np.float32) for _ in range(LAYERS)],
                [rng.standard_normal((rows, HEADS, n, DIM)).astype(np.float32) for _ in range(LAYERS)])

    return [seg(frozen), seg(past)]


def _live(segments, mask, layer=0, kind=0):
    whole = np.concatenate([s[kind][layer] for s in segments], axis=2)
    return [whole[r][:, mask[r]] for r in range(mask.shape[0])]


def test_pack_puts_each_rows_live_slots_first_in_order():
    rng = np.random.default_rng(0)
    segments = _engine_kv(rng, 3, 5, 4)
    mask = np.zeros((3, 9), bool)
    mask[0, :5] = mask[0, 5:7] = True  # a padded prefill row: a gap between its prompt and new tokens
    mask[1, 2:9] = True  # padding first
    mask[2, [0, 3, 6, 8]] = True  # scattered, across the segment boundary
    kv = DecodeKV.pack(segments, mask)
    assert kv.width == 9 and kv.lengths.tolist() == [7, 7, 4]
    assert kv.capacity % decode_kv.GROW_SLOTS == 0 and kv.capacity > 7
    for layer in range(LAYERS):
        for kind, tensors in ((0, kv.keys), (1, kv.values)):
            for r, live in enumerate(_live(segments, mask, layer, kind)):
                np.testing.assert_array_equal(tensors[layer][r, :, : live.shape[1]], live)
    att = kv.attention_mask()
    assert att.shape == (3, kv.capacity + 1) and att[:, -1].all() and att[:, :-1].sum(1).tolist() == [7, 7, 4]


def test_append_writes_each_rows_next_slot_and_a_stale_owner_keeps_its_view(monkeypatch):
    monkeypatch.setattr(decode_kv, "GROW_SLOTS", 4)
    rng = np.random.default_rng(1)
    segments = _engine_kv(rng, 2, 3, 0)
    mask = np.array([[True, True, True], [True, False, False]])
    kv = DecodeKV.pack(segments, mask)
    assert kv.capacity == 4

    def new():
        return [rng.standard_normal((2, HEADS, 1, DIM)).astype(np.float32) for _ in range(LAYERS)]

    k1, v1 = new(), new()
    kv1 = kv.appended(k1, v1)
    assert kv1.lengths.tolist() == [4, 2] and kv1.width == 4
    np.testing.assert_array_equal(kv1.keys[0][0, :, 3], k1[0][0, :, 0])
    np.testing.assert_array_equal(kv1.keys[0][1, :, 1], k1[0][1, :, 0])
    k2, v2 = new(), new()
    kv2 = kv1.appended(k2, v2)  # row 0 needs slot 4: the buffers grow (a copy)
    assert kv2.capacity == 8 and kv2.lengths.tolist() == [5, 3]
    np.testing.assert_array_equal(kv2.values[1][0, :, 4], v2[1][0, :, 0])
    np.testing.assert_array_equal(kv2.keys[0][0, :, :4], kv1.keys[0][0, :, :4])
    # kv1 is stale now: appending to it again must not write where kv2 reads
    before = [t.copy() for t in kv2.keys]
    kv1b = kv1.appended(new(), new())
    assert all(np.array_equal(a, b) for a, b in zip(before, kv2.keys))
    assert kv1b.lengths.tolist() == [5, 3]


def test_select_stack_and_width():
    rng = np.random.default_rng(2)
    a = DecodeKV.pack(_engine_kv(rng, 2, 4, 1), np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool))
    b = DecodeKV.pack(_engine_kv(rng, 1, 40, 0), np.ones((1, 40), bool))
    picked = a.select([1])
    assert picked.lengths.tolist() == [2] and picked.width == 5
    np.testing.assert_array_equal(picked.keys[1][0], a.keys[1][1])
    stacked = DecodeKV.stack([a, b], 45)
    assert stacked.rows == 3 and stacked.width == 45 and stacked.lengths.tolist() == [5, 2, 40]
    assert stacked.capacity == max(a.capacity, b.capacity)
    np.testing.assert_array_equal(stacked.values[0][2, :, :40], b.values[0][0, :, :40])
    np.testing.assert_array_equal(stacked.values[0][0, :, :5], a.values[0][0, :, :5])
    assert not stacked.keys[0][:2, :, a.capacity :].any()  # the shorter KV's rows end in zeros
    assert a.with_width(5).width == 5
    with pytest.raises(InvalidInputError):
        a.with_width(4)
    with pytest.raises(InvalidInputError):
        DecodeKV.stack([a, b], 39)


def test_engine_mask_must_match_the_live_slots():
    rng = np.random.default_rng(3)
    kv = DecodeKV.pack(_engine_kv(rng, 2, 3, 0), np.array([[1, 1, 1], [0, 1, 1]], bool))
    kv.check_engine_mask(np.array([[1, 1, 1, 1], [0, 1, 1, 1]], bool))
    with pytest.raises(InvalidInputError, match="live slots"):
        kv.check_engine_mask(np.array([[1, 1, 1, 1], [0, 0, 1, 1]], bool))
    with pytest.raises(InvalidInputError, match=r"\[2, 4\]"):
        kv.check_engine_mask(np.ones((2, 5), bool))
