"""Batched prefill passes, each one decoder call over rows of many requests (run by execute.py):

    from scratch:   a link with no parent (the system turn; a prefix without one)  -> one KV entry per row
    continuations:  a link from its parent entry (prefix from the system turn, [prefix + A] from the prefix)
                                                                                    -> one KV entry per row
    comparisons:    [prefix + A] + image B and the question (a continuation with logits at the end)
                                                                  -> logits (and the batch KV, for reasoning)

Rows differ in length (profiles, image grids): new tokens are right-padded and the attention mask hides the padding;
a KV forked from entries of different lengths is right-padded the same way (KVStore.fork). Padding tokens are any
non-image token; they are never attended.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from c4u_engine.engine.chain import NewTokens
from c4u_engine.engine.kv_store import KVEntry, KVStore


def _pad(rows: Sequence[NewTokens], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    lens = [len(r.ids) for r in rows]
    width = max(lens)
    ids = np.full((len(rows), width), pad_id, np.int64)
    pos = np.zeros((3, len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        ids[i, : lens[i]] = r.ids
        pos[:, i, : lens[i]] = r.positions
        mask[i, : lens[i]] = True
    return ids, pos, mask, lens


def prefill_from_scratch(runner, rows: Sequence[NewTokens], pad_id: int) -> list[tuple[Any, np.ndarray]]:
    """Text-only prompts from scratch: (KV batch 1, mask) per row, exactly each row's length."""
    ids, pos, mask, lens = _pad(rows, pad_id)
    _, kv = runner.forward(runner.embed(ids, []), pos, None, mask, np.zeros((len(rows), 1), np.int64))
    return [(runner.kv_select(kv, [r], length=n), np.ones(n, bool)) for r, n in enumerate(lens)]


def prefill_continuations(runner, store: KVStore, pasts: Sequence[KVEntry], rows: Sequence[NewTokens],
                          image_embeds: Sequence[Any] | None, pad_id: int, logits_at_end: bool = False,
                          reserve: int = 0) -> tuple[np.ndarray | None, Any, np.ndarray, list[int]]:
    """Row r continues pasts[r] with rows[r] (whose image pads take image_embeds[r]).

    image_embeds None: text-only rows. Returns (logits float32 [R, vocab] after each row's last token when
    logits_at_end else None, the batch KV, its mask bool [R, slots], the new-token count of each row). The KV holds
    fork-width + padded new slots."""
    ids, pos, new_mask, lens = _pad(rows, pad_id)
    past, past_mask = store.fork(runner, pasts, reserve=ids.shape[1] + reserve)
    mask = np.concatenate([past_mask, new_mask], axis=1)
    index = np.array([[n - 1] for n in lens], np.int64) if logits_at_end else np.zeros((len(rows), 1), np.int64)
    logits, kv = runner.forward(runner.embed(ids, list(image_embeds or [])), pos, past, mask, index,
                                reserve=reserve)
    return (logits[:, 0] if logits_at_end else None), kv, mask, lens


def split_entries(runner, kv, mask: np.ndarray, lens: Sequence[int]) -> list[tuple[Any, np.ndarray]]:
    """Per row of a continuation batch: (KV batch 1, mask) cut after the row's own last new token."""
    past_slots = mask.shape[1] - max(lens)
    out = []
    for r, n in enumerate(lens):
        length = past_slots + n
        out.append((runner.kv_select(kv, [r], length=length), mask[r, :length].copy()))
    return out
