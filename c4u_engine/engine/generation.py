"""Batched decoding: every row of a batch steps together; finished rows leave the batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

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
    batch = first_logits.shape[0]
    result = DecodeResult(tokens=[[] for _ in range(batch)], finished_by=["length"] * batch)
    eos = set(int(e) for e in eos_ids)
    active = list(range(batch))
    logits = first_logits
    positions = np.asarray(next_positions, dtype=np.int64).copy()
    mask = np.asarray(attention_mask, dtype=bool)
    for step in range(max_new_tokens):
        if before_sample is not None:
            for i, row in enumerate(active):
                before_sample(row, result.tokens[row], logits[i])
        banned = sorted(eos) if step < min_new_tokens else []  # as transformers' min_new_tokens
        if step == 0:
            banned += list(suppress_first)  # as transformers' begin_suppress_tokens
        if banned:
            logits = logits.copy()
            logits[:, banned] = -np.inf
        chosen = sampler(logits)
        keep = []
        for i, row in enumerate(active):
            tok = int(chosen[i])
            result.tokens[row].append(tok)
            result.tokens_decoded += 1
            if tok in eos:
                result.finished_by[row] = "eos"
            elif stop is not None and stop(row, result.tokens[row]):
                result.finished_by[row] = "stop"
            else:
                keep.append(i)
        result.steps = step + 1
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):  # compact: finished rows stop costing compute
            kv = runner.kv_select(kv, keep, reserve=max_new_tokens - step - 1)
            mask, positions, chosen = mask[keep], positions[keep], chosen[keep]
            active = [active[i] for i in keep]
        b = len(active)
        embeds = runner.embed(chosen.reshape(b, 1), [])
        mask = np.concatenate([mask, np.ones((b, 1), dtype=bool)], axis=1)
        pos = np.broadcast_to(positions.reshape(1, b, 1), (3, b, 1))
        out, kv = runner.forward(embeds, pos, kv, mask, np.zeros((b, 1), dtype=np.int64))
        logits = out[:, 0]
        positions += 1
    return result
