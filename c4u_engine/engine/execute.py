"""run(batch): a step's model calls, executed in order, without touching any request's state.

    encode       every image to embed, deduplicated by content across requests, in one vision call
                 (ModelSession.encode: the encoder cache first)
    links        level by level (system turn, prefix, image A): entries with no parent from scratch, the others
                 continuing their parent (found in the store, held by the request, or computed a moment before);
                 each inserted into the KV store as it is computed
    comparisons  one call per judge mode: fast rows answer from the logits, reasoning rows join the decode batch
    decode       one token for every row of the decode batch (continuous batching)

A batched call that raises is retried per request; a request whose part fails alone is reported in
`outputs.failures` and takes no further part in the step (a failed decode pass fails every request decoding in it:
the batch KV was handed over). Work whose parent entry is missing (its computation failed for another request) is
left for a later step. The decode batch lives here: it is the reasoning rows' KV.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from c4u_engine.comparison import Comparison
from c4u_engine.engine.answer import AnswerTokens, prob_a_from_logits
from c4u_engine.engine.chain import IMAGE_A, NewTokens
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.decode_batch import DecodeBatch, DecodeRow, reasoning_batch
from c4u_engine.engine.kv_store import KVEntry, KVStore, PrefixKey
from c4u_engine.engine.prefill import prefill_continuations, prefill_from_scratch, split_entries
from c4u_engine.engine.request import Request
from c4u_engine.engine.session import ImageJob, ModelSession
from c4u_engine.engine.stats import CallStats
from c4u_engine.engine.step import LinkWork, Row, StepBatch, StepOutputs

STAGES = ("prefill_prefix", "prefill_prefix", "prefill_image_a")  # per chain level, as Selection.stats names them


def chunks(items: list, tokens: Callable[[Any], int], config: EngineConfig) -> list[list]:
    """Consecutive runs within max_batch_rows rows and max_batch_tokens (padded) new tokens."""
    out, cur, width = [], [], 0
    for it in items:
        w = max(width, tokens(it))
        if cur and (len(cur) + 1 > config.max_batch_rows or w * (len(cur) + 1) > config.max_batch_tokens):
            out.append(cur)
            cur, w = [], tokens(it)
        cur.append(it)
        width = w
    if cur:
        out.append(cur)
    return out


class StepExecutor:
    def __init__(self, session: ModelSession, store: KVStore, answer: AnswerTokens, config: EngineConfig) -> None:
        self.session = session
        self.runner = session.runner
        self.store = store
        self.answer = answer
        self.config = config
        self.calls = CallStats()
        self.decode = self.new_decode_batch()
        self._found: dict[PrefixKey, KVEntry] = {}

    def new_decode_batch(self) -> DecodeBatch:
        return reasoning_batch(self.runner, self.session.tokenizer, self.answer)

    def run(self, batch: StepBatch) -> StepOutputs:
        out = StepOutputs()
        out.failures.update(batch.failures)
        self._found = {e.key: e for _, e in batch.hits} | {e.key: e for _, e in batch.parents}
        try:
            self._run(batch, out)
        finally:
            self._found = {}
        return out

    def _run(self, batch: StepBatch, out: StepOutputs) -> None:
        if batch.encode:
            self._isolated(batch.encode, lambda it: it[0], lambda part: self._encode(part, out), out)
        for works in batch.links:  # a call computes links from scratch or from their parents, never both
            for group in ([w for w in works if w.link.parent is None], [w for w in works if w.link.parent is not None]):
                if group:
                    self._isolated(group, lambda w: _owner(w, out), lambda part: self._links(part, out), out)
        for mode, rows in batch.rows.items():  # rows whose request holds (or got) its prefix and image A
            ready = [row for row in rows if self._a_entry(row, out) is not None and (
                row.request.prefix is not None or self._entry(row.request.chain.prefix.key, row.request, out))]
            if ready:
                self._isolated(ready, lambda row: row.request, lambda part, m=mode: self._compare(part, m, out), out)
        self._decode_step(out)

    # -- calls -------------------------------------------------------------------------------------------------
    def _encode(self, items: list[tuple[Request, int]], out: StepOutputs) -> None:
        t0 = time.perf_counter()
        results = self.session.encode([ImageJob(r.images[i], r.pixels[i], r.use_cache) for r, i in items])
        for (r, i), result in zip(items, results):
            out.embeds[(r.id, i)] = result
        if not all(cached for _, cached in results):
            out.seconds.append(("vision", time.perf_counter() - t0, [r for r, _ in items]))

    def _links(self, works: list[LinkWork], out: StepOutputs) -> None:
        """Missing chain links of one level, all with parents or all without, in calls of max_batch_rows rows."""
        works = [w for w in works if w.link.parent is None or self._parent(w, out) is not None]  # others: later
        done = StepOutputs()  # counters of this part, kept only if all of it succeeds (a retry counts again)
        for chunk in chunks(works, lambda w: len(w.link.new.ids), self.config):
            t0 = time.perf_counter()
            new, pad = [w.link.new for w in chunk], self.session.tokenizer.im_end_id
            if chunk[0].link.parent is None:
                pasts, computed = [None] * len(chunk), prefill_from_scratch(self.runner, new, pad)
            else:
                pasts = [self._parent(w, out) for w in chunk]
                embeds = ([self._embeds(*_holder(w, out), out) for w in chunk]
                          if chunk[0].link.level == IMAGE_A else None)
                _, kv, mask, lens = prefill_continuations(self.runner, self.store, pasts, new, embeds, pad)
                computed = split_entries(self.runner, kv, mask, lens)
            self.calls.note(len(chunk))
            for w, (kv_r, mask_r), past in zip(chunk, computed, pasts):
                self._insert(w, kv_r, mask_r, past, out, done)
            self._charge(chunk, t0, done)
        out.counts += done.counts
        out.seconds += done.seconds

    def _compare(self, rows: list[Row], mode: str, out: StepOutputs) -> None:
        # kernel mode with the paged store: reasoning rows decode in the store's pools (runners/paged_rows.py)
        paged_rows = mode == "reason" and self.runner.capabilities.paged_decode_rows and self.store.layout == "paged"
        reserve = max(row.request.max_new_tokens for row in rows) if mode == "reason" and not paged_rows else 0
        t0 = time.perf_counter()
        layouts = [row.request.spans.layout(row.request.grids[row.pair[0]], row.request.grids[row.pair[1]], mode)
                   for row in rows]
        news = [NewTokens(lay.ids[lay.a_end:], lay.positions[:, lay.a_end:]) for lay in layouts]
        pasts = [self._a_entry(row, out) for row in rows]
        embeds_b = [self._embeds(row.request, row.pair[1], out) for row in rows]
        logits, kv, mask, lens = prefill_continuations(self.runner, self.store, pasts, news, embeds_b,
                                                       self.session.tokenizer.im_end_id, logits_at_end=True,
                                                       reserve=reserve)
        if paged_rows:  # before anything is recorded: a failure here is retried
            kv = self.store.decode_rows(self.runner, kv, mask, pasts, lens)
        self.calls.note(len(rows))
        if mode == "fast":
            answers = [prob_a_from_logits(logits[k], *self.answer.ids) for k in range(len(rows))]
        else:  # the rows' KV is the decode batch's from here on
            joining = [DecodeRow((row.request, row.index), row.request.sampler, row.request.max_new_tokens)
                       for row in rows]
            self.decode.join(joining, kv, mask, logits, np.array([lay.next_position for lay in layouts]))
            out.joined += rows
        # recorded only now that the call succeeded (a failed batch is retried per request)
        for k, (row, new) in enumerate(zip(rows, news)):
            out.count(row.request, "tokens_prefilled", len(new.ids))
            out.count(row.request, "comparisons")
            if mode == "fast":
                p = answers[k]
                out.comparisons[(row.request.id, row.index)] = Comparison(*row.pair, "A" if p >= 0.5 else "B", p,
                                                                          mode="fast")
        out.prefilled += rows
        out.seconds.append(("prefill_comparisons", time.perf_counter() - t0, [row.request for row in rows]))

    def _decode_step(self, out: StepOutputs) -> None:
        if out.failures:  # a failed request's rows leave before the pass
            self.decode.drop(lambda owner: owner[0] in out.failures)
        if not len(self.decode):
            return
        t0 = time.perf_counter()
        for row in self.decode.rows:
            out.decoded[row.owner[0]] += 1
        try:
            out.finished, ran = self.decode.step()
        except Exception as exc:  # noqa: BLE001 - the batch KV was handed over: every row in it is lost
            self.decode = self.new_decode_batch()
            for r in out.decoded:
                out.failures.setdefault(r, exc)
            out.decoded.clear()
            return
        if ran:
            self.calls.note(ran)
        out.seconds.append(("decode", time.perf_counter() - t0, list(out.decoded)))
        for r, n in out.decoded.items():
            out.count(r, "decode_steps")
            out.count(r, "tokens_decoded", n)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _insert(self, work: LinkWork, kv: Any, mask: np.ndarray, parent: KVEntry | None, out: StepOutputs,
                done: StepOutputs) -> None:
        """Store a computed entry (its pin is the step's until postprocess) and count its tokens in `done`."""
        key = work.link.key
        entry = self.store.insert(key, kv, mask, work.link.last_position, retain=key.scope == "", parent=parent)
        out.entries[key] = entry
        out.pins.append(entry)
        done.count(_owner(work, out), "tokens_prefilled", len(work.link.new.ids))

    @staticmethod
    def _charge(works: list[LinkWork], t0: float, done: StepOutputs) -> None:
        stage = STAGES[works[0].link.level]
        done.seconds.append((stage, time.perf_counter() - t0, [r for w in works for r in w.requests]))

    def _entry(self, key: PrefixKey, r: Request | None, out: StepOutputs) -> KVEntry | None:
        """The entry under `key`: computed this step, found by schedule(), or held by the request."""
        entry = out.entries.get(key) or self._found.get(key)
        if entry is None and r is not None:
            held = [e for e in r.held_entries() if e.key == key]
            entry = held[0] if held else None
        return entry

    def _parent(self, work: LinkWork, out: StepOutputs) -> KVEntry | None:
        return self._entry(work.link.parent, _owner(work, out), out)

    def _a_entry(self, row: Row, out: StepOutputs) -> KVEntry | None:
        held = row.request.a_entries.get(row.pair[0])
        return held if held is not None else self._entry(row.request.chain.image_a(row.pair[0]).key, row.request, out)

    @staticmethod
    def _embeds(r: Request, image: int, out: StepOutputs) -> Any:
        return r.embeds[image] if r.embeds is not None else out.embeds[(r.id, image)][0]

    def _isolated(self, items: Sequence, owner: Callable[[Any], Request | None], call: Callable[[list], None],
                  out: StepOutputs) -> None:
        """call(items); if it raises, call each request's items alone, and fail only a request that fails alone."""
        items = [it for it in items if owner(it) is not None and owner(it) not in out.failures]
        if not items:
            return
        try:
            call(items)
        except Exception as exc:  # noqa: BLE001 - routed to the requests involved
            requests = list(dict.fromkeys(owner(it) for it in items))
            if len(requests) == 1:
                out.failures[requests[0]] = exc
                return
            for r in requests:
                self._isolated([it for it in items if owner(it) is r], owner, call, out)


def _owner(work: LinkWork, out: StepOutputs) -> Request | None:
    """The first request the entry is computed for that has not failed (None: all have)."""
    return next((r for r in work.requests if r not in out.failures), None)


def _holder(work: LinkWork, out: StepOutputs) -> tuple[Request, int]:
    """The first holder whose request has not failed: (request, candidate) whose embeddings an image A link takes
    (holders show the same image under their own candidate ids)."""
    return next((r, c) for r, c in work.holders if r not in out.failures)
