"""Batched decoding with continuous batching: rows join and leave the decode batch between steps.

A row joins with the KV, mask and logits its prefill produced; each `step` chooses one token for every row (from the
logits it holds), lets finished rows leave (end of sequence, the batch's stop rule, or the row's max_new_tokens),
merges the rows that joined since the last merge into the batch KV once they are enough of it (runner.kv_stack,
right-padded; the mask hides the padding; MERGE_*) and runs a decoder pass per cohort for the survivors. The
scheduler keeps one batch for every request's reasoning rows, so a request's few rows start decoding at the next step
instead of waiting for another request's long decode; generation.decode runs one batch to the end (chat, GRPO
rollouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from c4u_engine.engine.answer import AnswerTokens, prob_a_from_logits
from c4u_engine.engine.sampling import Sampler

STOP_TEXT = "</answer>"
# Rows that join a running batch are right-padded to its slots, and every step adds a slot to every row: a batch that
# never drains (continuous arrivals) would grow its KV without bound, each row paying for slots it masks out. Once the
# batch holds more than COMPACT_SLACK x its longest row's live slots (+ COMPACT_MIN_SLOTS), the live slots are
# re-packed to the front (Runner.kv_gather_slots).
COMPACT_SLACK = 1.5
COMPACT_MIN_SLOTS = 64
# Merging copies every row's KV into one new batch KV (runner.kv_stack), and a few rows join a large batch at almost
# every step under load: a copy of the whole batch each time (20% of a reasoning batch's time, built-in model, 64
# rows), where a pass of its own costs a few rows' worth plus the call's fixed cost. So rows that join are merged
# with each other (small copies) into one joining cohort that decodes in its own pass, and that cohort merges into
# the large one once it is MERGE_FRACTION of it or has decoded MERGE_AFTER_STEPS steps apart: one large copy per
# few steps instead of one per step.
MERGE_FRACTION = 0.25
MERGE_AFTER_STEPS = 4


@dataclass(eq=False)
class DecodeRow:
    owner: Any  # whoever waits for the row (the scheduler's request and pair index)
    sampler: Sampler
    max_new_tokens: int
    min_new_tokens: int = 0  # end-of-sequence is banned before this many tokens (as transformers' min_new_tokens)
    tokens: list[int] = field(default_factory=list)
    answer_prob: float | None = None  # P(A) read right after the answer cue, when the row writes it
    finished_by: str | None = None  # "eos" | "stop" | "length" once done


@dataclass
class _Cohort:
    rows: list[DecodeRow]
    kv: Any
    mask: np.ndarray  # bool [rows, slots]
    logits: np.ndarray  # float32 [rows, vocab]: for each row's next token
    positions: np.ndarray  # int64 [rows]: M-RoPE position of each row's next token
    next_tokens: np.ndarray | None = None  # int64 [rows]: the tokens chosen this step, fed to the next pass
    passes: int = 0  # decoder passes run since the cohort was formed


# a row is done after its latest token when this says so (end of sequence and max_new_tokens are checked first)
StopRule = Callable[[DecodeRow], bool]
# called for every row before its next token is chosen: (row, logits for that token)
BeforeSample = Callable[[DecodeRow, np.ndarray], None]


def reasoning_stop(tokenizer) -> StopRule:
    """A reasoning row stops once it has written "</answer>"."""
    return lambda row: STOP_TEXT in tokenizer.decode(row.tokens[-6:])


def read_answer_prob(tokenizer, answer: AnswerTokens) -> BeforeSample:
    """Records P(A) from the logits right after the answer cue (the answer logits, read as fast mode does)."""
    def before_sample(row: DecodeRow, logits: np.ndarray) -> None:
        if row.answer_prob is None and row.tokens and \
                tokenizer.decode(row.tokens[-4:]).rstrip().endswith(answer.answer_cue):
            row.answer_prob = prob_a_from_logits(logits, *answer.ids)

    return before_sample


class DecodeBatch:
    """eos_ids end a row; `stop` may end it after any token; `suppress_first` are banned as a row's first token
    (as transformers' begin_suppress_tokens); `before_sample` sees every row's logits before its token is chosen."""

    def __init__(self, runner, *, eos_ids: Sequence[int], stop: StopRule | None = None,
                 suppress_first: Sequence[int] = (), before_sample: BeforeSample | None = None) -> None:
        self.runner = runner
        self._eos = set(int(e) for e in eos_ids)
        self._stop = stop
        self._suppress_first = list(suppress_first)
        self._before_sample = before_sample
        self._cohorts: list[_Cohort] = []  # [0] is the running batch once merged; others joined since
        self.compactions = 0

    @property
    def rows(self) -> list[DecodeRow]:
        return [r for c in self._cohorts for r in c.rows]

    def __len__(self) -> int:
        return sum(len(c.rows) for c in self._cohorts)

    def join(self, rows: list[DecodeRow], kv, mask: np.ndarray, logits: np.ndarray, next_positions: np.ndarray) -> None:
        """Add rows (a batch KV of len(rows) rows, its mask, the logits after their last prompt token)."""
        mask = np.asarray(mask, bool)
        self._cohorts.append(_Cohort(list(rows), self.runner.kv_for_decode(kv, mask), mask, np.asarray(logits),
                                     np.asarray(next_positions, np.int64).copy()))

    def drop(self, owners_to_drop) -> list[DecodeRow]:
        """Remove the rows whose owner satisfies `owners_to_drop(owner)` (cancelled requests); returns them."""
        dropped = []
        for c in self._cohorts:
            keep = [i for i, r in enumerate(c.rows) if not owners_to_drop(r.owner)]
            if len(keep) < len(c.rows):
                dropped += [r for i, r in enumerate(c.rows) if i not in set(keep)]
                self._select(c, keep)
        self._cohorts = [c for c in self._cohorts if c.rows]
        return dropped

    def step(self) -> tuple[list[DecodeRow], int]:
        """One token for every row. Returns (rows that finished, rows that ran a decoder pass)."""
        finished: list[DecodeRow] = []
        for c in self._cohorts:
            chosen = self._choose(c)
            keep = []
            for i, row in enumerate(c.rows):
                tok = int(chosen[i])
                row.tokens.append(tok)
                if tok in self._eos:
                    row.finished_by = "eos"
                elif self._stop is not None and self._stop(row):
                    row.finished_by = "stop"
                elif len(row.tokens) >= row.max_new_tokens:
                    row.finished_by = "length"
                else:
                    keep.append(i)
            finished += [row for row in c.rows if row.finished_by is not None]
            c.next_tokens = chosen[keep]
            self._select(c, keep)
        self._cohorts = [c for c in self._cohorts if c.rows]
        if not self._cohorts:
            return finished, 0
        self._merge()
        for batch in self._cohorts:  # one decoder pass per cohort (one, unless rows joined since the last merge)
            self._compact(batch)
            b = len(batch.rows)
            embeds = self.runner.embed(batch.next_tokens.reshape(b, 1), [])
            batch.mask = np.concatenate([batch.mask, np.ones((b, 1), dtype=bool)], axis=1)
            pos = np.broadcast_to(batch.positions.reshape(1, b, 1), (3, b, 1))
            out, batch.kv = self.runner.forward(embeds, pos, batch.kv, batch.mask, np.zeros((b, 1), dtype=np.int64),
                                                reserve=self._reserve(batch.rows))
            batch.logits = out[:, 0]
            batch.positions = batch.positions + 1
            batch.passes += 1
        return finished, len(self)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _choose(self, c: _Cohort) -> np.ndarray:
        logits = c.logits
        if self._before_sample is not None:
            for i, row in enumerate(c.rows):
                self._before_sample(row, logits[i])
        banned = [(i, list(self._eos)) for i, row in enumerate(c.rows) if len(row.tokens) < row.min_new_tokens]
        banned += [(i, self._suppress_first) for i, row in enumerate(c.rows) if not row.tokens and self._suppress_first]
        if banned:
            logits = logits.copy()
            for i, ids in banned:
                logits[i, ids] = -np.inf
        chosen = np.empty(len(c.rows), dtype=np.int64)
        by_sampler: dict[int, list[int]] = {}
        for i, row in enumerate(c.rows):
            by_sampler.setdefault(id(row.sampler), []).append(i)
        kernels = self.runner.kernels  # kernel mode (the runner's declaration): ops.sampling on its device
        for idx in by_sampler.values():
            sampler = c.rows[idx[0]].sampler
            chosen[idx] = sampler(logits[idx]) if kernels is None else sampler.sample_with(kernels, logits[idx])
        return chosen

    def _select(self, c: _Cohort, keep: list[int]) -> None:
        if len(keep) == len(c.rows):
            return
        c.rows = [c.rows[i] for i in keep]
        if not keep:  # the cohort leaves: a KV holding pool blocks gives them back now (Runner.kv_release)
            self.runner.kv_release(c.kv)
        else:
            c.kv = self.runner.kv_select(c.kv, keep, reserve=self._reserve(c.rows))
            c.mask, c.logits, c.positions = c.mask[keep], c.logits[keep], c.positions[keep]

    def _merge(self) -> None:
        """At most two cohorts after this: the largest, and the rows that joined since it formed (see MERGE_*)."""
        if len(self._cohorts) < 2:
            return
        largest = max(self._cohorts, key=lambda c: len(c.rows))
        joining = [c for c in self._cohorts if c is not largest]
        joined = joining[0] if len(joining) == 1 else self._stack(joining)
        if len(joined.rows) >= MERGE_FRACTION * len(largest.rows) or joined.passes >= MERGE_AFTER_STEPS:
            self._cohorts = [self._stack([largest, joined])]
        else:
            self._cohorts = [largest, joined]

    def _stack(self, cohorts: list[_Cohort]) -> _Cohort:
        """One cohort of the given ones' rows, in order (a copy of their KVs, right-padded to the longest)."""
        slots = max(c.mask.shape[1] for c in cohorts)
        rows = [r for c in cohorts for r in c.rows]
        kv = self.runner.kv_stack([c.kv for c in cohorts], slots, reserve=self._reserve(rows))
        mask = np.zeros((len(rows), slots), dtype=bool)
        at = 0
        for c in cohorts:
            mask[at : at + len(c.rows), : c.mask.shape[1]] = c.mask
            at += len(c.rows)
        merged = _Cohort(rows, kv, mask, np.concatenate([c.logits for c in cohorts]),
                         np.concatenate([c.positions for c in cohorts]),
                         passes=max(c.passes for c in cohorts))  # the oldest joiner's age
        merged.next_tokens = np.concatenate([c.next_tokens for c in cohorts])
        return merged

    def _compact(self, batch: _Cohort) -> None:
        live = batch.mask.sum(axis=1)
        longest = int(live.max())
        if batch.mask.shape[1] <= COMPACT_SLACK * longest + COMPACT_MIN_SLOTS:
            return
        index = np.zeros((len(batch.rows), longest), dtype=np.int64)  # a row's spare places point at slot 0, masked
        mask = np.zeros((len(batch.rows), longest), dtype=bool)
        for r in range(len(batch.rows)):
            slots = np.flatnonzero(batch.mask[r])
            index[r, : len(slots)] = slots
            mask[r, : len(slots)] = True
        kv = self.runner.kv_gather_slots(batch.kv, index, reserve=self._reserve(batch.rows))
        if kv is not None:
            batch.kv, batch.mask = kv, mask
            self.compactions += 1

    @staticmethod
    def _reserve(rows: list[DecodeRow]) -> int:
        return max((r.max_new_tokens - len(r.tokens) for r in rows), default=0)


def reasoning_batch(runner, tokenizer, answer: AnswerTokens) -> DecodeBatch:
    """The decode batch of reasoning rows: stop at "</answer>", no empty thinking first, P(A) read at the answer."""
    return DecodeBatch(runner, eos_ids=tokenizer.eos_token_ids, stop=reasoning_stop(tokenizer),
                       suppress_first=answer.empty_thinking, before_sample=read_answer_prob(tokenizer, answer))
