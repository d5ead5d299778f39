"""Decoding a batch to the end: every row steps together; finished rows leave the batch (engine.decode_batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from c4u_engine.engine.decode_batch import DecodeBatch, DecodeRow
from c4u_engine.engine.sampling import Sampler
from c4u_engine.runners.base import KV, Runner

# called before each token is chosen: (row, tokens generated so far, logits for the next token)
BeforeSample = Callable[[int, list[int], np.ndarray], None]
# decides whether a row is done after a token: (row, tokens generated so far) -> stop?
StopRule = Callable[[int, list[int]], bool]


@dataclass
class DecodeResult:
    tokens: list[list[int]]
    steps: int = 0
    tokens_decoded: int = 0
    finished_by: list[str] = field(default_factory=list)  # "eos" | "stop" | "length"


def decode(
    runner: Runner,
    kv: KV,
    attention_mask: np.ndarray,
    first_logits: np.ndarray,
    next_positions: np.ndarray,
    *,
    max_new_tokens: int,
    sampler: Sampler,
    eos_ids: Sequence[int],
    stop: StopRule | None = None,
    before_sample: BeforeSample | None = None,
    min_new_tokens: int = 0,
    suppress_first: Sequence[int] = (),
) -> DecodeResult:
    """Generate up to max_new_tokens per row.

    kv: runner KV for the batch, attention_mask bool [B, L] says which of its slots are real; first_logits [B, V]
    are the logits after the last prompt token; next_positions int64 [B] the M-RoPE position of the first new token
    (text positions are equal on the three axes). suppress_first: token ids that may not be the first new token."""
    batch = DecodeBatch(
        runner, eos_ids=eos_ids, suppress_first=suppress_first,
        stop=None if stop is None else (lambda row: stop(row.owner, row.tokens)),
        before_sample=None if before_sample is None else (lambda row, logits: before_sample(row.owner, row.tokens,
                                                                                            logits)))
    rows = [DecodeRow(r, sampler, max_new_tokens, min_new_tokens) for r in range(first_logits.shape[0])]
    batch.join(rows, kv, attention_mask, first_logits, next_positions)
    steps = 0
    while len(batch):
        batch.step()
        steps += 1
    return DecodeResult(tokens=[r.tokens for r in rows], steps=steps, tokens_decoded=sum(len(r.tokens) for r in rows),
                        finished_by=[r.finished_by for r in rows])
