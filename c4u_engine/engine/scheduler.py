"""A lane's scheduler: each step reads schedule -> run -> postprocess (as in nano-vllm and vLLM v1).

    batch = schedule()          which requests take part (oldest first, within max_step_tokens after one token for
                                every decoding row; the oldest always runs, none overtakes an older one), and for
                                them: images to encode, the chain entries each needs (found in the KV store, or to
                                compute, level by level), rounds that start, this step's comparison rows (one call
                                per judge mode, oldest rows first; reasoning rows within the decode batch's room)
    outputs = run(batch)        the model calls (execute.py): chunked, a failing call fails only its own requests
    postprocess(batch, outputs) entries handed to their requests, answers recorded, plans advanced, requests finished

The lane's thread, its queue, admission, deadlines and recovery live beside this, in worker.py. Only the scheduler
talks to the KV store: schedule() pins the entries it finds, run() inserts what it computes (the store is the
memory the KV is computed into: a paged [prefix + A] entry shares the blocks of a [prefix] computed a moment before),
postprocess() pins entries for their requests and gives back the step's own pins.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from c4u_engine.comparison import Comparison
from c4u_engine.engine.answer import AnswerTokens, parse_answer
from c4u_engine.engine.chain import PREFIX, Link
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.decode_batch import DecodeRow
from c4u_engine.engine.execute import StepExecutor, chunks
from c4u_engine.engine.kv_store import KVEntry, KVStore, PrefixKey
from c4u_engine.engine.request import Pair, Request
from c4u_engine.engine.session import ModelSession
from c4u_engine.engine.stats import charge
from c4u_engine.engine.step import PREFIX_SLOT, Holder, LinkWork, Row, StepBatch, StepOutputs
from c4u_engine.errors import C4UError, InferenceError

class Scheduler:
    """The live requests of one lane and their step. `cache_totals()` adds engine-wide cache sizes to a finished
    request's stats."""

    def __init__(self, session: ModelSession, store: KVStore, answer: AnswerTokens, reason_prefix: str,
                 config: EngineConfig, cache_totals: Callable[[], dict[str, Any]] = dict) -> None:
        self.session = session
        self.store = store
        self.answer = answer
        self.reason_prefix = reason_prefix
        self.config = config
        self.cache_totals = cache_totals
        self.active: list[Request] = []
        self.executor = StepExecutor(session, store, answer, config)

    def step(self) -> None:
        batch = outputs = None
        try:
            batch = self.schedule()
            outputs = self.run(batch)
            self.postprocess(batch, outputs)
        except BaseException:
            if batch is not None:  # a bug outside the guarded calls: the step's own pins go back first
                self.abort(batch, outputs)
            raise

    def run(self, batch: StepBatch) -> StepOutputs:
        return self.executor.run(batch)

    # -- schedule ----------------------------------------------------------------------------------------------
    def schedule(self) -> StepBatch:
        chosen = self._choose()
        batch = StepBatch(chosen, [], [], [], [[], [], []], [], {"fast": [], "reason": []}, len(self.executor.decode))
        planned: dict[PrefixKey, LinkWork] = {}
        rounds = []
        try:
            for r in chosen:  # every request's prefix before any image A: the levels run in order
                if r.prefix is None:
                    try:
                        pairs, mode = r.plan.pending_round()  # the first round starts with the prefix
                    except Exception as exc:  # noqa: BLE001 - a plan that cannot go on fails its own request only
                        batch.failures[r] = exc
                        continue
                    self._need(batch, planned, r.chain.prefix, (r, PREFIX_SLOT))
                    batch.starts.append((r, pairs, mode))
                    rounds.append((r, pairs, mode, list(range(len(pairs)))))
                elif r.round_pairs is not None:
                    rounds.append((r, r.round_pairs, r.round_mode, list(r.waiting_rows)))
                if r.embeds is None:
                    batch.encode += [(r, i) for i in range(len(r.images))]
            for r, pairs, _, waiting in rounds:
                for c in dict.fromkeys(pairs[i][0] for i in waiting):
                    if c not in r.a_entries:
                        self._need(batch, planned, r.chain.image_a(c), (r, c))
        except BaseException:
            self.abort(batch, None)
            raise
        self._rows(batch, rounds)
        return batch

    def _choose(self) -> list[Request]:
        budget = self.config.max_step_tokens - len(self.executor.decode)
        chosen: list[Request] = []
        for r in self.active:
            cost = self._step_cost(r)
            if not cost:
                continue  # only decoding, or waiting for its round to be recorded
            if chosen and cost > budget:
                break
            chosen.append(r)
            budget -= cost
        return chosen

    def _step_cost(self, r: Request) -> int:
        """New tokens (image tokens included) the request would compute in this step, roughly."""
        if r.embeds is None:
            return sum(self.session.image_token_count(g) for g in r.grids) + r.first_step_tokens
        if r.prefix is None:
            return r.first_step_tokens
        if r.round_pairs is None or not r.waiting_rows:
            return 0
        cost = sum(len(r.chain.image_a(c).new.ids)
                   for c in {r.round_pairs[i][0] for i in r.waiting_rows} - set(r.a_entries))
        for i in r.waiting_rows:
            layout = _layout(r, r.round_pairs[i], r.round_mode)
            cost += len(layout.ids) - layout.a_end
        return cost

    def _need(self, batch: StepBatch, planned: dict, link: Link, holder: Holder) -> None:
        """`holder` needs `link`'s entry: joins this step's computation of it, or takes it from the store (pinned),
        or it is computed (with its parent, for a prefix: the system turn)."""
        request = holder[0]
        work = planned.get(link.key)
        if work is not None:
            work.holders.append(holder)
            work.requests.append(request)
            return
        entry = self.store.acquire(link.key)
        if entry is not None:
            batch.hits.append((holder, entry))
            return
        planned[link.key] = work = LinkWork(link, [holder], [request])
        batch.links[link.level].append(work)
        system = request.chain.system
        if link.level != PREFIX or system is None:
            return
        if system.key in planned:  # computed for several requests: a failure of the first does not skip it
            planned[system.key].requests.append(request)
        elif all(e.key != system.key for _, e in batch.parents):
            entry = self.store.acquire(system.key)
            if entry is not None:
                batch.parents.append((request, entry))
            else:
                planned[system.key] = LinkWork(system, [], [request])
                batch.links[system.level].append(planned[system.key])

    def _rows(self, batch: StepBatch, rounds: list) -> None:
        """This step's comparison rows: one call per judge mode, oldest request first; reasoning rows only as many
        as the decode batch has room for."""
        room = self.config.max_batch_rows - batch.decode_rows
        by_mode: dict[str, list[Row]] = {"fast": [], "reason": []}
        for r, pairs, mode, waiting in rounds:
            if mode == "reason":
                waiting = waiting[: max(room, 0)]
                room -= len(waiting)
            by_mode[mode] += [Row(r, i, pairs[i]) for i in waiting]
        for mode, rows in by_mode.items():
            if rows:
                width = lambda row, m=mode: _rest(_layout(row.request, row.pair, m))  # noqa: E731
                batch.rows[mode] = chunks(rows, width, self.config)[0]

    # -- postprocess ---------------------------------------------------------------------------------------------
    def postprocess(self, batch: StepBatch, out: StepOutputs) -> None:
        for r, exc in [*batch.failures.items(), *out.failures.items()]:
            if r in self.active:
                self.fail(r, exc)
        live = set(self.active)
        self._take_embeddings(batch, out, live)
        self._take_entries(batch, out, live)
        for r, pairs, mode in batch.starts:
            if r in live and r.prefix is not None and r.round_pairs is None:
                r.start_round(pairs, mode)
        self._take_comparisons(out, live)
        for r, name, n in out.counts:
            r.timer.count(name, n)
        for stage, seconds, requests in out.seconds:
            charge([r.timer for r in requests], stage, seconds)
        self.abort(batch, out)  # nothing is left but the step's own pins
        self.advance()

    def abort(self, batch: StepBatch, out: StepOutputs | None) -> None:
        """Give back the pins the step itself still holds: entries found but not handed to a request, parents,
        and what run() inserted. Safe to call twice (after a failure midway through postprocess, too)."""
        held = [e for _, e in batch.hits] + [e for _, e in batch.parents] + (out.pins if out is not None else [])
        batch.hits, batch.parents = [], []
        if out is not None:
            out.pins = []
        for entry in held:
            self.store.release(entry)

    def recover(self, exc: BaseException) -> None:
        """After a step failed outside the guarded calls: fail every live request (their state may be
        inconsistent) and start over with an empty decode batch."""
        self.executor.decode = self.executor.new_decode_batch()
        for r in list(self.active):
            r.decoding = 0
            try:
                self.fail(r, exc)
            except Exception:  # noqa: BLE001 - its KV bookkeeping is what broke: forget the request anyway
                if r in self.active:
                    self.active.remove(r)
                if r.future.set_running_or_notify_cancel():
                    r.future.set_exception(InferenceError(f"engine step failed: {type(exc).__name__}: {exc}"))

    def _take_embeddings(self, batch: StepBatch, out: StepOutputs, live: set) -> None:
        for r, i in batch.encode:
            if r not in live or (r.id, i) not in out.embeds:
                continue
            if r.embeds is None:
                r.embeds = [None] * len(r.images)
                r.timer.count("images_encoded", 0)
                r.timer.count("images_cached", 0)
            r.embeds[i], cached = out.embeds[(r.id, i)]
            r.pixels[i] = None  # no longer needed
            r.timer.count("images_cached" if cached else "images_encoded")

    def _take_entries(self, batch: StepBatch, out: StepOutputs, live: set) -> None:
        while batch.hits:  # each pinned once for its holder by schedule(); handed over one by one
            (r, slot), entry = batch.hits.pop()
            r.timer.count("prefix_cache_hits")
            if r in live and _wants(r, slot):
                _give(r, slot, entry)
            else:
                self.store.release(entry)
        for r, _ in batch.parents:
            r.timer.count("prefix_cache_hits")
        for level in batch.links:
            for work in level:
                entry = out.entries.get(work.link.key)
                for r, slot in work.holders if entry is not None else ():
                    if r in live and _wants(r, slot):
                        _give(r, slot, self.store.pin(entry))

    def _take_comparisons(self, out: StepOutputs, live: set) -> None:
        for row in out.prefilled:
            r = row.request
            if r in live and r.round_pairs is not None and row.index in r.waiting_rows:
                r.waiting_rows.remove(row.index)
                if (r.id, row.index) in out.comparisons:
                    r.results[row.index] = out.comparisons[(r.id, row.index)]
        for row in out.joined:
            if row.request in live:
                row.request.decoding += 1
        for decoded in out.finished:
            r, i = decoded.owner
            if r in live:
                r.decoding -= 1
                r.results[i] = self._reasoned(r, i, decoded)

    def _reasoned(self, r: Request, i: int, row: DecodeRow) -> Comparison:
        a, b = r.round_pairs[i]
        text = self.reason_prefix + self.session.tokenizer.decode(row.tokens, skip_special_tokens=True)
        answer, reasoning, error = parse_answer(text)
        if row.answer_prob is not None:
            prob = row.answer_prob
        elif answer is not None:
            prob = 1.0 if answer == "A" else 0.0
        else:
            prob = 0.5
        if error and row.finished_by == "length":
            error += f" (stopped at max_new_tokens={row.max_new_tokens})"
        return Comparison(a, b, answer, prob, reasoning=reasoning, mode="reason", error=error, raw_text=text)

    # -- rounds and the end of a request --------------------------------------------------------------------------
    def advance(self) -> None:
        """Record every complete round; start the next one of each request holding its prefix; finish the done."""
        for r in list(self.active):
            try:
                if r.round_complete():
                    r.plan.record([r.results[i] for i in range(len(r.round_pairs))])
                    for e in r.a_entries.values():
                        self.store.release(e)
                    r.a_entries, r.results, r.round_pairs = {}, {}, None
                if r.prefix is not None and r.round_pairs is None:
                    pending = r.plan.pending_round()
                    if pending is None:
                        self.finish(r)
                    else:
                        r.start_round(*pending)
            except Exception as exc:  # noqa: BLE001 - a plan that cannot go on fails its own request only
                self.fail(r, exc)

    def release(self, r: Request) -> None:
        """Forget a request: its KV unpinned, its decode rows dropped."""
        for e in r.held_entries():
            self.store.release(e)
        r.prefix, r.a_entries = None, {}
        if r.decoding:
            self.executor.decode.drop(lambda owner: owner[0] is r)
            r.decoding = 0
        if r in self.active:
            self.active.remove(r)

    def fail(self, r: Request, exc: BaseException) -> None:
        self.release(r)
        if not isinstance(exc, C4UError):
            err = InferenceError(f"a batched model call failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            exc = err
        if r.future.set_running_or_notify_cancel():
            r.future.set_exception(exc)

    def finish(self, r: Request) -> None:
        self.release(r)
        stats: dict[str, Any] = dict(r.timer.counters)
        stats["seconds"] = {**{k: round(v, 6) for k, v in r.timer.seconds.items()},
                            "total": round(time.perf_counter() - r.submitted, 6)}
        stats["scheduler_rounds"] = r.rounds
        stats.update(self.cache_totals())
        try:
            result = r.plan.result(stats)
        except Exception as exc:  # noqa: BLE001
            if r.future.set_running_or_notify_cancel():
                r.future.set_exception(exc)
            return
        if r.future.set_running_or_notify_cancel():
            r.future.set_result(result)

def _layout(r: Request, pair: Pair, mode: str):
    return r.spans.layout(r.grids[pair[0]], r.grids[pair[1]], mode)

def _rest(layout) -> int:
    """New tokens of a comparison row beyond its [prefix + A] entry."""
    return len(layout.ids) - layout.a_end

def _wants(r: Request, slot: int) -> bool:
    return r.prefix is None if slot == PREFIX_SLOT else slot not in r.a_entries

def _give(r: Request, slot: int, entry: KVEntry) -> None:
    if slot == PREFIX_SLOT:
        r.prefix = entry
    else:
        r.a_entries[slot] = entry
