"""The onnxruntime runner's KV for decode batches: every row's slots packed from slot 0, each step appended in place.

Why: a decode step attends over a frozen segment (the cache) and the new token; onnxruntime's CPU MatMul rounds a
row's sum of e x V differently when zeros (padding) sit among its terms or when the cache is split elsewhere, while
zeros after the terms change nothing. In the engine's layout a row's slots move with its batch (prefill pads each
comparison's new tokens to the longest in its call, folds and merges happen at batch-wide points), so a long
generation's P(A) depended on what shared the batch (7.5e-2 after 256 tokens, built-in int8 engine). Here a row's
cache is always its live slots in order from slot 0, then unused capacity, and each step's token is its own
one-slot segment, the same alone and batched: with the batch-invariant attention of int8 / int4 exports, decoding
is bit for bit independent of the batch. Used for engines that claim batch invariance (OnnxRuntimeRunner
.packed_decode); it costs 2-5% of a reasoning selection (attention over the spare capacity, a copy at join), which
engines with the fused softmax, not invariant anyway, need not pay.

Layout: per layer K and V of [rows, kv_heads, capacity, head_dim]; `lengths[r]` live slots in row r. The engine
keeps its own slot layout (its attention mask, `width` slots, live slots where the mask says); the runner maps it:
row r's live slots, in order, are its first lengths[r] slots here. Capacity grows GROW_SLOTS at a time (one copy),
so a step writes one slot per row and copies nothing else.

Handing over (runners/base.py): forward appends in place and returns a new DecodeKV on the same buffers. A stale
DecodeKV still reads correctly (its slots are never overwritten), and one appended to again copies its buffers first
(`tips` records how far the newest owner has written).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from c4u_engine.errors import InvalidInputError

GROW_SLOTS = 32  # capacity added when a row's next slot would not fit: one copy of the cache per 32 steps


class _Buffers:
    __slots__ = ("keys", "values", "tips")

    def __init__(self, keys: list[np.ndarray], values: list[np.ndarray], tips: np.ndarray) -> None:
        self.keys, self.values, self.tips = keys, values, tips


class DecodeKV:
    """Rows packed from slot 0 (module docstring); `width` is the engine's slot count for this KV."""

    __slots__ = ("_buffers", "lengths", "width")

    def __init__(self, buffers: _Buffers, lengths: np.ndarray, width: int) -> None:
        self._buffers, self.lengths, self.width = buffers, np.asarray(lengths, np.int64), int(width)

    @classmethod
    def pack(cls, segments: list[tuple[list[np.ndarray], list[np.ndarray]]], mask: np.ndarray) -> "DecodeKV":
        """From an engine-layout KV (segments laid end to end) and its mask [rows, width]: the live slots of each row,
        in order, copied to the front of new buffers (slice copies of each row's runs of live slots: a prefill's
        rows are one or two runs, where a gather of every slot took most of a reasoning selection's host time)."""
        mask = np.asarray(mask, bool)
        lengths = mask.sum(axis=1).astype(np.int64)
        capacity = _capacity(int(lengths.max(initial=0)) + 1)
        starts = np.cumsum([0] + [keys[0].shape[2] for keys, _ in segments])
        copies = []  # (row, destination slot, segment, first slot in it, slots)
        for r in range(mask.shape[0]):
            edges = np.flatnonzero(np.diff(np.concatenate([[False], mask[r], [False]]).astype(np.int8)))
            at = 0
            for run_start, run_stop in zip(edges[0::2], edges[1::2]):
                for i, (seg_start, seg_stop) in enumerate(zip(starts[:-1], starts[1:])):
                    lo, hi = max(run_start, seg_start), min(run_stop, seg_stop)
                    if lo < hi:
                        copies.append((r, at, i, lo - seg_start, hi - lo))
                        at += hi - lo

        def packed(tensors: list[np.ndarray]) -> np.ndarray:  # one layer's K (or V), one array per segment
            first = tensors[0]
            out = np.zeros((mask.shape[0], first.shape[1], capacity, first.shape[3]), first.dtype)
            for r, at, i, src, n in copies:
                out[r, :, at : at + n] = tensors[i][r, :, src : src + n]
            return out

        layers = len(segments[0][0])
        keys = [packed([seg[0][layer] for seg in segments]) for layer in range(layers)]
        values = [packed([seg[1][layer] for seg in segments]) for layer in range(layers)]
        return cls(_Buffers(keys, values, lengths.copy()), lengths, mask.shape[1])

    @property
    def keys(self) -> list[np.ndarray]:
        return self._buffers.keys

    @property
    def values(self) -> list[np.ndarray]:
        return self._buffers.values

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def capacity(self) -> int:
        return int(self._buffers.keys[0].shape[2])

    def attention_mask(self) -> np.ndarray:
        """[rows, capacity + 1]: each row's live slots, then the step's new token."""
        mask = np.ones((self.rows, self.capacity + 1), bool)
        mask[:, :-1] = np.arange(self.capacity) < self.lengths[:, None]
        return mask

    def check_engine_mask(self, mask: np.ndarray) -> None:
        """The engine's mask for a one-token step over this KV must say the same live counts."""
        if mask.shape != (self.rows, self.width + 1):
            raise InvalidInputError(f"attention_mask must be [{self.rows}, {self.width + 1}] for a decode KV of "
                                    f"{self.width} slots, got {list(mask.shape)}")
        if not mask[:, -1].all() or not np.array_equal(mask[:, :-1].sum(axis=1), self.lengths):
            raise InvalidInputError("attention_mask does not match the decode KV's live slots per row")

    def appended(self, new_keys: list[np.ndarray], new_values: list[np.ndarray]) -> "DecodeKV":
        """This KV with one more slot per row (new_* per layer [rows, kv_heads, 1, head_dim]), written in place."""
        buffers = self._buffers
        need = int(self.lengths.max(initial=0)) + 1
        if not np.array_equal(buffers.tips, self.lengths) or need > self.capacity:
            buffers = self._copy(_capacity(need))  # a stale owner, or full: its own, larger buffers
        rows = np.arange(self.rows)
        for store, new in zip(buffers.keys + buffers.values, list(new_keys) + list(new_values)):
            store[rows, :, self.lengths] = new[:, :, 0]
        lengths = self.lengths + 1
        buffers.tips = lengths.copy()
        return DecodeKV(buffers, lengths, self.width + 1)

    def select(self, rows: Sequence[int]) -> "DecodeKV":
        idx = np.asarray(list(rows), np.intp)
        lengths = self.lengths[idx]
        return DecodeKV(_Buffers([t[idx] for t in self.keys], [t[idx] for t in self.values], lengths.copy()),
                        lengths, self.width)

    def with_width(self, width: int) -> "DecodeKV":
        """The same rows under another engine layout (the engine re-packed its slots: live ones keep their order)."""
        if width < int(self.lengths.max(initial=0)):
            raise InvalidInputError(f"a decode KV with {int(self.lengths.max())} live slots in a row cannot have "
                                    f"{width} slots")
        return DecodeKV(self._buffers, self.lengths, width)

    @staticmethod
    def stack(kvs: Sequence["DecodeKV"], width: int) -> "DecodeKV":
        """Rows of several decode KVs, in order, in new buffers (the engine's merged layout has `width` slots)."""
        capacity = max(kv.capacity for kv in kvs)
        lengths = np.concatenate([kv.lengths for kv in kvs])
        if int(lengths.max(initial=0)) > width:
            raise InvalidInputError(f"kv_stack: a row with {int(lengths.max())} live slots does not fit {width} slots")

        def join(tensors: list[np.ndarray]) -> np.ndarray:
            first = tensors[0]
            out = np.zeros((sum(t.shape[0] for t in tensors), first.shape[1], capacity, first.shape[3]), first.dtype)
            row = 0
            for t in tensors:
                out[row : row + t.shape[0], :, : t.shape[2]] = t
                row += t.shape[0]
            return out

        layers = len(kvs[0].keys)
        keys = [join([kv.keys[layer] for kv in kvs]) for layer in range(layers)]
        values = [join([kv.values[layer] for kv in kvs]) for layer in range(layers)]
        return DecodeKV(_Buffers(keys, values, lengths.copy()), lengths, width)

    def nbytes(self) -> int:
        return int(sum(t.nbytes for t in self.keys + self.values))

    def _copy(self, capacity: int) -> _Buffers:
        def grown(t: np.ndarray) -> np.ndarray:
            out = np.zeros((t.shape[0], t.shape[1], capacity, t.shape[3]), t.dtype)
            live = min(t.shape[2], capacity)
            out[:, :, :live] = t[:, :, :live]
            return out

        return _Buffers([grown(t) for t in self.keys], [grown(t) for t in self.values], self.lengths.copy())


def _capacity(slots: int) -> int:
    return -(-slots // GROW_SLOTS) * GROW_SLOTS
