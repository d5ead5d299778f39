"""The scheduler: one thread owns the runner and batches the work of every live request.

Each step reads schedule -> run -> postprocess, phase by phase (as in nano-vllm's engine step), each phase one or a
few batched calls over the rows of ALL live requests:

    admit:        FIFO from a bounded queue, while the KV store has room (a request is always admitted when idle)
    reap:         cancelled requests and those past their deadline leave; their KV is released
    schedule:     the requests whose prefill work fits this step's token budget, oldest first (the oldest always
                  runs, none overtakes an older one): bounded steps keep decoding moving and finish old requests
                  first instead of advancing every request in lockstep
    encode:       every image not yet encoded, deduplicated by content across requests, in one vision call
    prefixes:     [prefix] KV of requests that have none (shared when two requests have the same profile)
    images A:     [prefix + A] KV for the first images of each request's current round
    comparisons:  one call per judge mode of the current rounds' rows (oldest request first, within the row and
                  token budgets); fast rows answer at once, reasoning rows join the decode batch
    decode:       one token for every reasoning row of every request (continuous batching)
    advance:      a request whose round is complete records it and asks its plan for the next; finished ones resolve

An exception inside a batched call fails only the requests whose rows it held: the call is retried per request, and
only a request that fails alone is failed (a failed decode step fails the requests decoding in it). Generic model
calls (Engine.chat, Engine.logits) run on the same thread between steps.
"""

from __future__ import annotations

import atexit
import bisect
import threading
import weakref
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np

from c4u_engine.comparison import Comparison
from c4u_engine.engine.answer import AnswerTokens, parse_answer, prob_a_from_logits
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.decode_batch import DecodeBatch, DecodeRow, reasoning_batch
from c4u_engine.engine.kv_store import KVStore
from c4u_engine.engine.model_engine import ModelEngine
from c4u_engine.engine.prefill import (NewTokens, prefill_continuations, prefill_prefixes, split_entries,
                                       text_tokens)
from c4u_engine.engine.request import Request
from c4u_engine.errors import C4UError, DeadlineExceededError, InferenceError, OverloadedError, RequestCancelledError
from c4u_engine.engine.pixels import concat_pixels

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
IDLE_EXIT_S = 2.0  # the thread exits after this long without work (and starts again on the next request)
_LIVE: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Join scheduler threads before the interpreter tears down the runtimes they call into."""
    for scheduler in list(_LIVE):
        scheduler.close()


class Scheduler:
    def __init__(self, core: ModelEngine, store: KVStore, answer: AnswerTokens, reason_prefix: str,
                 config: EngineConfig) -> None:
        self.core = core
        self.runner = core.runner
        self.store = store
        self.answer = answer
        self.reason_prefix = reason_prefix
        self.config = config
        self._cond = threading.Condition()
        self._queue: deque[Request] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._active: list[Request] = []
        self._decode = self._new_decode_batch()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0
        self.batch_rows: list[int] = []  # rows per decoder call of the last steps (bounded; for metrics)
        self.calls = 0  # decoder calls made, rows they held, and how many calls had <= ROW_BUCKETS[i] rows
        self.rows_total = 0
        self.rows_histogram = [0] * (len(ROW_BUCKETS) + 1)
        _LIVE.add(self)

    def _new_decode_batch(self) -> DecodeBatch:
        return reasoning_batch(self.runner, self.core.tokenizer, self.answer)

    # -- the caller's side ----------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue a request (FIFO); OverloadedError when max_queued_requests are already waiting."""
        with self._cond:
            if self._closed:
                raise RequestCancelledError("the engine is closed")
            if len(self._queue) >= self.config.max_queued_requests:  # cancelled ones do not count
                self._queue = deque(r for r in self._queue if not r.abandoned)
            if len(self._queue) >= self.config.max_queued_requests:
                raise OverloadedError(f"{len(self._queue)} requests are already queued (max_queued_requests="
                                      f"{self.config.max_queued_requests}); retry later")
            request.enqueued = time.perf_counter()
            self._queue.append(request)
            self._wake()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the scheduler thread between steps (it owns the runner) and return its result."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RequestCancelledError("the engine is closed")
            self._calls.append((fn, fut))
            self._wake()
        return fut.result()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def active_requests(self) -> int:
        return len(self._active)

    def close(self) -> None:
        """Stop: queued and live requests fail with RequestCancelledError; the thread exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def _wake(self) -> None:  # holding self._cond
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="c4u-scheduler", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # -- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._calls or self._active or self._closed):
                    if not self._cond.wait(timeout=IDLE_EXIT_S) and not (self._queue or self._calls or self._active):
                        self._thread = None
                        return
                if self._closed:
                    self._shutdown()
                    return
                calls, self._calls = list(self._calls), deque()
            for fn, fut in calls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
            if self._queue or self._active:
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - a bug outside the guarded calls must not stop the engine
                    self._recover(exc)

    def _recover(self, exc: Exception) -> None:
        """Fail every live request (their state may be inconsistent) and start over with an empty decode batch."""
        self._decode = self._new_decode_batch()
        for r in list(self._active):
            r.decoding = 0
            try:
                self._fail(r, exc)
            except Exception:  # noqa: BLE001 - its KV bookkeeping is what broke: forget the request anyway
                if r in self._active:
                    self._active.remove(r)
                if r.future.set_running_or_notify_cancel():
                    r.future.set_exception(InferenceError(f"engine step failed: {type(exc).__name__}: {exc}"))

    def _shutdown(self) -> None:  # holding self._cond
        err = RequestCancelledError("the engine was closed before the request finished")
        for r in list(self._active) + list(self._queue):
            self._fail(r, err)
        self._queue.clear()
        for fn, fut in self._calls:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(err)
        self._calls.clear()
        self._thread = None

    def step(self) -> None:
        self.steps += 1
        now = time.monotonic()
        self._admit(now)
        self._reap(now)
        chosen = self._schedule()
        for phase in (self._encode, self._prefill_prefixes, self._advance_chosen, self._prefill_images_a,
                      self._prefill_comparisons):
            chosen = [r for r in chosen if r in self._active]  # a request failed by a phase takes no part after it
            phase(chosen)
        self._decode_step()
        self._advance()

    def _advance_chosen(self, chosen: list[Request]) -> None:
        self._advance()

    def _schedule(self) -> list[Request]:
        """The requests whose prefill work runs this step: oldest first, within max_step_tokens (after one token
        for every decoding row). The oldest always runs; a younger one never overtakes an older one that waits."""
        budget = self.config.max_step_tokens - len(self._decode)
        chosen: list[Request] = []
        for r in self._active:
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
            return sum(self.core.image_token_count(g) for g in r.grids) + r.first_step_tokens
        if r.prefix is None:
            return r.first_step_tokens
        if r.round_pairs is None or not r.waiting_rows:
            return 0
        n = len(r.spans.prefix_ids)
        cost = sum(len(r.spans.prefix_a(r.grids[c])[0]) - n
                   for c in {r.round_pairs[i][0] for i in r.waiting_rows} - set(r.a_entries))
        for i in r.waiting_rows:
            layout = self._layout(r, i, r.round_mode)
            cost += len(layout.ids) - layout.a_end
        return cost

    # -- admission, deadlines, cancellation --------------------------------------------------------------------
    def _admit(self, now: float) -> None:
        reserved = 0
        per_slot = self.store.bytes_per_slot
        with self._cond:
            while self._queue and len(self._active) < self.config.max_active_requests:
                r = self._queue[0]
                if r.abandoned or r.expired(now):
                    self._queue.popleft()
                    self._drop_or_expire(r)
                    continue
                need = per_slot * r.kv_slots_estimate
                if self._active and self.store.pinned_bytes + reserved + need > self.store.capacity:
                    break  # the KV budget is held by live requests: admit less, never fail
                self._queue.popleft()
                self._active.append(r)
                r.timer.seconds["queued"] = time.perf_counter() - r.enqueued
                reserved += need

    def _reap(self, now: float) -> None:
        for r in list(self._active):
            if r.abandoned or r.expired(now):
                self._drop_or_expire(r)
        with self._cond:  # waiting ones too: a deadline holds while the engine is full
            gone = [r for r in self._queue if r.abandoned or r.expired(now)]
            for r in gone:
                self._queue.remove(r)
        for r in gone:
            self._drop_or_expire(r)

    def _drop_or_expire(self, r: Request) -> None:
        if r.abandoned:
            self._release(r)
        else:
            self._fail(r, DeadlineExceededError(
                f"request {r.id} did not finish within its timeout (after {time.perf_counter() - r.submitted:.3f} s)"))

    def _release(self, r: Request) -> None:
        """Forget a request: its KV unpinned, its decode rows dropped."""
        for e in r.held_entries():
            self.store.release(e)
        r.prefix, r.a_entries = None, {}
        if r.decoding:
            self._decode.drop(lambda owner: owner[0] is r)
            r.decoding = 0
        if r in self._active:
            self._active.remove(r)

    def _fail(self, r: Request, exc: BaseException) -> None:
        self._release(r)
        if not isinstance(exc, C4UError):
            err = InferenceError(f"a batched model call failed: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            exc = err
        if r.future.set_running_or_notify_cancel():
            r.future.set_exception(exc)

    def _isolated(self, items: Sequence, owner: Callable[[Any], Request], run: Callable[[list], None]) -> None:
        """run(items); if it raises, run each request's items alone, and fail only a request that fails alone."""
        try:
            run(list(items))
        except Exception as exc:  # noqa: BLE001 - routed to the requests involved
            reqs = list(dict.fromkeys(owner(it) for it in items))
            if len(reqs) == 1:
                self._fail(reqs[0], exc)
                return
            for r in reqs:
                mine = [it for it in items if owner(it) is r]
                if r in self._active:
                    self._isolated(mine, owner, run)

    def _chunks(self, items: list, tokens: Callable[[Any], int]) -> list[list]:
        """Consecutive runs within max_batch_rows rows and max_batch_tokens (padded) new tokens."""
        out, cur, width = [], [], 0
        for it in items:
            w = max(width, tokens(it))
            if cur and (len(cur) + 1 > self.config.max_batch_rows or w * (len(cur) + 1) > self.config.max_batch_tokens):
                out.append(cur)
                cur, w = [], tokens(it)
            cur.append(it)
            width = w
        if cur:
            out.append(cur)
        return out

    def _note_rows(self, n: int) -> None:
        self.batch_rows.append(n)
        if len(self.batch_rows) > 4096:
            del self.batch_rows[:2048]
        self.calls += 1
        self.rows_total += n
        self.rows_histogram[bisect.bisect_left(ROW_BUCKETS, n)] += 1

    # -- encode ---------------------------------------------------------------------------------------------
    def _encode(self, chosen: list[Request]) -> None:
        waiting = [r for r in chosen if r.embeds is None]
        if not waiting:
            return
        cache, params, fp = self.core.encoder_cache, self.core.preprocess_params, self.core.fingerprint
        items = []  # (request, key, image index) still to encode
        for r in waiting:
            r.embeds = [None] * len(r.images)
            r.timer.count("images_encoded", 0)
            r.timer.count("images_cached", 0)
            for i, im in enumerate(r.images):
                key = (im.content_hash, params.key(), fp)
                hit = cache.get(key) if r.use_cache else None
                if hit is not None:
                    r.embeds[i] = hit
                    r.timer.count("images_cached")
                else:
                    items.append((r, key, i))
                    r.timer.count("images_encoded")

        def run(batch: list) -> None:
            todo: dict[Any, tuple[Request, int]] = {}
            for r, key, i in batch:
                todo.setdefault(key, (r, i))
            t0 = time.perf_counter()
            pixels, grids = [], []
            for r, i in todo.values():
                px = r.pixels[i]
                if px is None:  # cached at submit, evicted since
                    px, _ = self.core.preprocess([r.images[i].pixels])
                pixels.append(px)
                grids.append(r.grids[i])
            outs = self.runner.encode_images(concat_pixels(pixels), np.asarray(grids, np.int64))
            done = dict(zip(todo, outs))
            keep = {key for r, key, _ in batch if r.use_cache}
            for key in keep:
                cache.put(key, done[key])
            self._time(t0, "vision", [r for r, _, _ in batch])
            for r, key, i in batch:
                r.embeds[i] = done[key]
                r.pixels[i] = None  # no longer needed

        if items:
            self._isolated(items, lambda it: it[0], run)

    # -- prefixes ---------------------------------------------------------------------------------------------
    def _prefill_prefixes(self, chosen: list[Request]) -> None:
        missing: dict[Any, list[Request]] = {}
        for r in chosen:
            if r.embeds is not None and r.prefix is None:
                key = r.spans.prefix_key
                if key in missing:
                    missing[key].append(r)
                    continue
                entry = self.store.acquire(key)
                if entry is not None:
                    r.prefix = entry
                    r.timer.count("prefix_cache_hits")
                else:
                    missing[key] = [r]
        if not missing:
            return

        def assign(r, entry):
            r.prefix = entry

        def needs_prefix(r) -> bool:
            return r in self._active and r.prefix is None

        def run(batch: list) -> None:
            heads = self._heads([reqs[0] for _, reqs in batch if len(reqs[0].spans.head_ids)])
            try:
                plain = [it for it in batch if not len(it[1][0].spans.head_ids)]
                for chunk in self._chunks(plain, lambda it: len(it[1][0].spans.prefix_ids)):
                    t0 = time.perf_counter()
                    outs = prefill_prefixes(self.runner, [text_tokens(rs[0].spans.prefix_ids) for _, rs in chunk],
                                            self.core.tokenizer.im_end_id)
                    self._note_rows(len(chunk))
                    for (key, reqs), (kv, mask) in zip(chunk, outs):
                        self._store_for(key, kv, mask, len(mask) - 1, reqs, needs_prefix, assign)
                        reqs[0].timer.count("tokens_prefilled", len(mask))
                    self._time(t0, "prefill_prefix", [r for _, rs in chunk for r in rs])
                chained = [it for it in batch if len(it[1][0].spans.head_ids)]
                width = lambda it: len(it[1][0].spans.prefix_ids) - len(it[1][0].spans.head_ids)  # noqa: E731
                for chunk in self._chunks(chained, width):
                    t0 = time.perf_counter()
                    spans = [rs[0].spans for _, rs in chunk]
                    rows = [text_tokens(sp.prefix_ids, len(sp.head_ids)) for sp in spans]
                    pasts = [heads[sp.head_key] for sp in spans]
                    _, kv, mask, lens = prefill_continuations(self.runner, self.store, pasts, rows, None,
                                                              self.core.tokenizer.im_end_id)
                    self._note_rows(len(chunk))
                    entries = split_entries(self.runner, kv, mask, lens)
                    for (key, reqs), (kv_r, mask_r), sp, past in zip(chunk, entries, spans, pasts):
                        self._store_for(key, kv_r, mask_r, len(sp.prefix_ids) - 1, reqs, needs_prefix, assign,
                                        parent=past)
                        reqs[0].timer.count("tokens_prefilled", len(sp.prefix_ids) - len(sp.head_ids))
                    self._time(t0, "prefill_prefix", [r for _, rs in chunk for r in rs])
            finally:
                for entry in heads.values():
                    self.store.release(entry)

        self._isolated(list(missing.items()), lambda it: it[1][0], run)

    def _heads(self, reqs: list[Request]) -> dict:
        """The prefix heads (system turns) these requests continue from, pinned for the caller: found in the store,
        or computed together. Release each when done."""
        heads: dict = {}
        todo: dict = {}
        for r in reqs:
            key = r.spans.head_key
            if key in heads or key in todo:
                continue
            entry = self.store.acquire(key)
            if entry is not None:
                heads[key] = entry
                r.timer.count("prefix_cache_hits")
            else:
                todo[key] = r
        try:
            for chunk in self._chunks(list(todo.items()), lambda it: len(it[1].spans.head_ids)):
                t0 = time.perf_counter()
                outs = prefill_prefixes(self.runner, [text_tokens(r.spans.head_ids) for _, r in chunk],
                                        self.core.tokenizer.im_end_id)
                self._note_rows(len(chunk))
                for (key, r), (kv, mask) in zip(chunk, outs):
                    heads[key] = self.store.insert(key, kv, mask, len(mask) - 1, retain=key.scope == "")
                    r.timer.count("tokens_prefilled", len(mask))
                self._time(t0, "prefill_prefix", [r for _, r in chunk])
        except BaseException:
            for entry in heads.values():
                self.store.release(entry)
            raise
        return heads

    def _store_for(self, key, kv, mask, last_position: int, holders: list, needs, assign, parent=None) -> None:
        """Store a computed entry and pin it once for every live holder that still needs it (a retried batch may
        compute an entry some holders already got); with none left, it is only cached. `parent`: the entry this
        KV continues (a paged store shares its blocks)."""
        entry = self.store.insert(key, kv, mask, last_position, retain=key.scope == "", parent=parent)
        wanting = [h for h in holders if needs(h)]
        for k, holder in enumerate(wanting):
            if k:
                self.store.pin(entry)
            assign(holder, entry)
        if not wanting:
            self.store.release(entry)

    @staticmethod
    def _time(t0: float, stage: str, reqs: list) -> None:
        dt = time.perf_counter() - t0  # the call's time, charged to every request in it
        for r in dict.fromkeys(reqs):
            r.timer.add_seconds(stage, dt)

    # -- rounds -----------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        for r in list(self._active):
            try:
                if r.round_complete():
                    r.plan.record([r.results[i] for i in range(len(r.round_pairs))])
                    for e in r.a_entries.values():
                        self.store.release(e)
                    r.a_entries, r.results, r.round_pairs = {}, {}, None
                if r.prefix is not None and r.round_pairs is None:
                    nxt = r.plan.next_round()
                    if nxt is None:
                        self._finish(r)
                        continue
                    r.round_pairs, r.round_mode = list(nxt[0]), nxt[1]
                    r.waiting_rows = list(range(len(r.round_pairs)))
                    r.rounds += 1
            except Exception as exc:  # noqa: BLE001 - a plan that cannot go on fails its own request only
                self._fail(r, exc)

    def _finish(self, r: Request) -> None:
        self._release(r)
        stats = dict(r.timer.counters)
        stats["seconds"] = {**{k: round(v, 6) for k, v in r.timer.seconds.items()},
                            "total": round(time.perf_counter() - r.submitted, 6)}
        stats["scheduler_rounds"] = r.rounds
        try:
            result = r.finish(r.plan, stats)
        except Exception as exc:  # noqa: BLE001
            if r.future.set_running_or_notify_cancel():
                r.future.set_exception(exc)
            return
        if r.future.set_running_or_notify_cancel():
            r.future.set_result(result)

    # -- [prefix + A] ------------------------------------------------------------------------------------------
    def _prefill_images_a(self, chosen: list[Request]) -> None:
        missing: dict[Any, list[tuple[Request, int]]] = {}
        for r in chosen:
            if r.round_pairs is None or r.prefix is None:
                continue
            for c in dict.fromkeys(r.round_pairs[i][0] for i in r.waiting_rows):
                if c in r.a_entries:
                    continue
                key = r.a_key(c)
                if key in missing:
                    missing[key].append((r, c))
                    continue
                entry = self.store.acquire(key)
                if entry is not None:
                    r.a_entries[c] = entry
                    r.timer.count("prefix_cache_hits")
                else:
                    missing[key] = [(r, c)]
        if not missing:
            return

        def assign(rc, entry):
            rc[0].a_entries[rc[1]] = entry

        def needs_a(rc) -> bool:
            return rc[0] in self._active and rc[0].round_pairs is not None and rc[1] not in rc[0].a_entries

        def run(batch: list) -> None:
            def new_tokens(item) -> NewTokens:
                r, c = item[1][0]
                ids, pos = r.spans.prefix_a(r.grids[c])
                n = len(r.spans.prefix_ids)
                return NewTokens(ids[n:], pos[:, n:])

            for chunk in self._chunks(batch, lambda it: len(new_tokens(it).ids)):
                t0 = time.perf_counter()
                rows = [new_tokens(it) for it in chunk]
                firsts = [rcs[0] for _, rcs in chunk]
                _, kv, mask, lens = prefill_continuations(
                    self.runner, self.store, [r.prefix for r, _ in firsts], rows,
                    [r.embeds[c] for r, c in firsts], self.core.tokenizer.im_end_id)
                self._note_rows(len(rows))
                entries = split_entries(self.runner, kv, mask, lens)
                for (key, rcs), (kv_r, mask_r), row, (r, _) in zip(chunk, entries, rows, firsts):
                    self._store_for(key, kv_r, mask_r, int(row.positions[:, -1].max()), rcs, needs_a, assign,
                                    parent=r.prefix)
                    rcs[0][0].timer.count("tokens_prefilled", len(row.ids))
                self._time(t0, "prefill_image_a", [rc[0] for _, rcs in chunk for rc in rcs])

        self._isolated(list(missing.items()), lambda it: it[1][0][0], run)

    # -- comparisons --------------------------------------------------------------------------------------------
    def _prefill_comparisons(self, chosen: list[Request]) -> None:
        room = self.config.max_batch_rows - len(self._decode)  # reasoning rows the decode batch can still take
        by_mode: dict[str, list[tuple[Request, int]]] = {"fast": [], "reason": []}
        for r in chosen:  # oldest first: a stream of new requests cannot starve an old one
            if r.round_pairs is None:
                continue
            ready = [i for i in r.waiting_rows if r.round_pairs[i][0] in r.a_entries]
            if r.round_mode == "reason":
                ready = ready[: max(room, 0)]
                room -= len(ready)
            by_mode[r.round_mode] += [(r, i) for i in ready]
        for mode, items in by_mode.items():
            if items:
                self._isolated(items, lambda it: it[0], lambda batch, m=mode: self._judge(batch, m))

    def _layout(self, r: Request, i: int, mode: str):
        a, b = r.round_pairs[i]
        return r.spans.layout(r.grids[a], r.grids[b], mode)

    def _judge(self, items: list, mode: str) -> None:
        reserve = 0
        # kernel mode with the paged store: reasoning rows decode in the store's pools (runners/paged_rows.py)
        paged_rows = (mode == "reason" and getattr(self.runner, "kernels", None) is not None
                      and hasattr(self.store, "decode_rows"))
        if mode == "reason" and not paged_rows:
            reserve = max(r.max_new_tokens for r, _ in items)
        # One call per mode and step, oldest rows first: the decode batch steps between calls, so a request's
        # reasoning rows are not held up behind a flood of other requests' comparisons.
        chunks = self._chunks(items, lambda it: len(self._layout(*it, mode).ids) - self._layout(*it, mode).a_end)
        for chunk in chunks[:1]:
            t0 = time.perf_counter()
            layouts = [self._layout(r, i, mode) for r, i in chunk]
            rows = [NewTokens(lay.ids[lay.a_end:], lay.positions[:, lay.a_end:]) for lay in layouts]
            pasts = [r.a_entries[r.round_pairs[i][0]] for r, i in chunk]
            embeds_b = [r.embeds[r.round_pairs[i][1]] for r, i in chunk]
            logits, kv, mask, lens = prefill_continuations(self.runner, self.store, pasts, rows, embeds_b,
                                                           self.core.tokenizer.im_end_id, logits_at_end=True,
                                                           reserve=reserve)
            if paged_rows:  # before any request state changes: a failure here is retried
                kv = self.store.decode_rows(self.runner, kv, mask, pasts, lens)
            self._note_rows(len(rows))
            for (r, i), row in zip(chunk, rows):
                r.waiting_rows.remove(i)
                r.timer.count("tokens_prefilled", len(row.ids))
                r.timer.count("comparisons")
            self._time(t0, "prefill_comparisons", [r for r, _ in chunk])
            if mode == "fast":
                for k, (r, i) in enumerate(chunk):
                    p = prob_a_from_logits(logits[k], *self.answer.ids)
                    a, b = r.round_pairs[i]
                    r.results[i] = Comparison(a, b, "A" if p >= 0.5 else "B", p, mode="fast")
            else:
                drows = [DecodeRow((r, i), r.sampler, r.max_new_tokens) for r, i in chunk]
                for r, _ in chunk:
                    r.decoding += 1
                self._decode.join(drows, kv, mask, logits, np.array([lay.next_position for lay in layouts]))

    # -- decode ---------------------------------------------------------------------------------------------------
    def _decode_step(self) -> None:
        if not len(self._decode):
            return
        t0 = time.perf_counter()
        rows_of = Counter(row.owner[0] for row in self._decode.rows)
        try:
            finished, ran = self._decode.step()
        except Exception as exc:  # noqa: BLE001 - the batch KV was handed over: every row in it is lost
            self._decode = self._new_decode_batch()
            for r in rows_of:
                r.decoding = 0
                self._fail(r, exc)
            return
        if ran:
            self._note_rows(ran)
        self._time(t0, "decode", list(rows_of))
        for r, n in rows_of.items():
            r.timer.count("decode_steps")
            r.timer.count("tokens_decoded", n)
        for row in finished:
            r, i = row.owner
            r.decoding -= 1
            r.results[i] = self._reasoned(r, i, row)

    def _reasoned(self, r: Request, i: int, row: DecodeRow) -> Comparison:
        a, b = r.round_pairs[i]
        text = self.reason_prefix + self.core.tokenizer.decode(row.tokens, skip_special_tokens=True)
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

