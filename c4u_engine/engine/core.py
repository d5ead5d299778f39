"""The engine core: everything a loaded checkpoint serves with, assembled once, and the door requests come in by.

    runner      the model runtime (runners/: created here from backend/device/precision, or handed in)
    session     tokenizer, chat template, image pipeline, encoder cache over the runner (session.py)
    answer      the answer tokens and prefixes of this checkpoint and prompt (answer.py), checked with the spans
    lanes       one or more workers, each a thread over a scheduler with its own KV store (lanes.py, worker.py)

submit() turns a plan (what to judge, selection/) and its images into a Request (request.py, in the caller's thread)
and hands it to the least loaded lane; the lane resolves the request's future with the plan's result when it
finishes. Nothing here calls back into the public face (api.py).
"""

from __future__ import annotations

import itertools
import time
import zlib
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from c4u_engine.engine.answer import AnswerTokens
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.kv_store import KVStore
from c4u_engine.engine.lanes import Lane, lane_threads, lone_threads, pick_lane, planned_lanes, resolve_lanes
from c4u_engine.engine.prompt import prompt_template
from c4u_engine.engine.request import Plan, make_request
from c4u_engine.engine.sampling import SamplingParams
from c4u_engine.engine.scheduler import Scheduler
from c4u_engine.engine.session import ModelSession
from c4u_engine.engine.spans import check_spans
from c4u_engine.engine.worker import Worker


class EngineCore:
    """model_dir: a Qwen2.5-VL-family checkpoint; runner: an already-built runner over its model (then backend,
    device, dtype and precision are the runner's own); prompt: a PromptTemplate, preset name or None (the
    checkpoint's); config: the validated limits and budgets."""

    def __init__(self, model_dir: str | Path, config: EngineConfig, *, backend: str = "auto", device: str = "cpu",
                 dtype: str | None = None, precision: str | None = None, prompt: Any = None,
                 runner: Any = None) -> None:
        from c4u_engine.runners import create_runner

        model_dir = Path(model_dir)
        self.prompt = prompt_template(prompt, model_dir)
        planned = planned_lanes(config.lanes, device)
        self.runner = runner if runner is not None else create_runner(
            model_dir, backend=backend, device=device, dtype=dtype, precision=precision,
            intra_op_threads=lane_threads(planned), lone_threads=lone_threads(config.lanes, planned))
        self.config = config.replace(lanes=resolve_lanes(config.lanes, planned, self.runner,
                                                         built_here=runner is None))
        self.session = ModelSession(model_dir, self.runner, config=self.config)
        self.answer = AnswerTokens.resolve(
            self.session.tokenizer,
            lambda prefix: self.session.render([{"role": "user", "content": "x"}], prefix), self.prompt)
        check_spans(self.session, self.prompt, self.answer)
        share = self.config.prefix_cache_bytes // self.config.lanes
        self.lanes = []
        for _ in range(self.config.lanes):
            store = self._make_store(share)
            scheduler = Scheduler(self.session, store, self.answer, self.prompt.reason_prefix, self.config,
                                  self.cache_totals)
            self.lanes.append(Lane(Worker(scheduler), store))
        if len(self.lanes) > 1:  # a request alone may use every core (runners with lone sessions ask this per call)
            self.runner.set_lone_check(lambda: sum(lane.load > 0 for lane in self.lanes) <= 1)
        self._request_ids = itertools.count(1)

    def _make_store(self, capacity: int) -> KVStore:
        if self.config.kv_layout == "paged":
            from c4u_engine.engine.paged_kv_store import PagedKVStore

            return PagedKVStore(capacity, self.runner, self.config.kv_block_size)
        return KVStore(capacity, self.runner.kv_nbytes)

    # -- requests ----------------------------------------------------------------------------------------------
    def submit(self, images: list, profile, plan: Plan, *, max_new_tokens: int, use_cache: bool,
               timeout: float | None, submitted: float, seconds: dict[str, float],
               pixels: list | None = None) -> Future:
        """A Future of plan.result(stats) once every round the plan asks for is judged (OverloadedError when the
        chosen lane's queue is full). `images` are loaded and checked; `pixels` their preprocessed patches when
        the caller has them; `timeout` None takes config.default_timeout_s."""
        timeout = self.config.default_timeout_s if timeout is None else timeout
        if plan.pending_round() is None:  # one candidate: nothing to judge
            future: Future = Future()
            future.set_result(plan.result({"seconds": {"total": round(time.perf_counter() - submitted, 6)},
                                           **self.cache_totals()}))
            return future
        request = make_request(self.session, self.prompt, self.answer, next(self._request_ids), images, profile, plan,
                               max_new_tokens=max_new_tokens, use_cache=use_cache, timeout=timeout,
                               submitted=submitted, seconds=seconds, pixels=pixels)
        pick_lane(self.lanes, zlib.crc32(request.spans.prefix_ids.tobytes())).worker.submit(request)
        return request.future

    def call(self, fn) -> Any:
        """fn() on the first lane's thread, between its steps (generic model calls: logits, chat)."""
        return self.lanes[0].worker.call(fn)

    def logits(self, messages: list[dict], assistant_prefix: str = ""):
        return self.call(lambda: self.session.logits(messages, assistant_prefix))

    def chat(self, messages: list[dict], *, max_new_tokens: int, min_new_tokens: int, assistant_prefix: str,
             **sampling: Any):
        """Generate with a KV cache; `sampling`: SamplingParams' fields (do_sample, temperature, top_p, ...)."""
        params = SamplingParams(**sampling)
        return self.call(lambda: self.session.chat(messages, max_new_tokens=max_new_tokens,
                                                   min_new_tokens=min_new_tokens, assistant_prefix=assistant_prefix,
                                                   sampling=params))

    # -- facts and housekeeping --------------------------------------------------------------------------------
    def cache_totals(self) -> dict[str, int]:
        """KV entries and bytes kept over every lane (a finished request's stats carry them)."""
        return {"prefix_cache_entries": sum(len(lane.store) for lane in self.lanes),
                "prefix_cache_bytes": sum(lane.store.nbytes for lane in self.lanes)}

    def stats(self) -> dict[str, Any]:
        """Queue depth, live requests, steps, rows per decoder call, cache sizes and hit counts, summed over the
        lanes ("lanes" has each lane's queue depth, live requests and steps)."""
        workers, stores = [lane.worker for lane in self.lanes], [lane.store for lane in self.lanes]
        calls = [w.scheduler.executor.calls for w in workers]
        encoder = self.session.encoder_cache
        return {"queue_depth": sum(w.queue_depth for w in workers),
                "active_requests": sum(w.active_requests for w in workers),
                "steps": sum(w.steps for w in workers),
                "batch_rows": [n for c in calls for n in c.batch_rows[-256:]],
                "model_calls": sum(c.calls for c in calls), "model_call_rows": sum(c.rows_total for c in calls),
                "model_call_rows_histogram": [sum(column) for column in zip(*(c.rows_histogram for c in calls))],
                **self.cache_totals(), "prefix_cache_pinned_bytes": sum(s.pinned_bytes for s in stores),
                "prefix_cache_hits": sum(s.hits for s in stores), "prefix_cache_misses": sum(s.misses for s in stores),
                "prefix_cache_evictions": sum(s.evictions for s in stores),
                "encoder_cache_hits": encoder.hits, "encoder_cache_misses": encoder.misses,
                "lanes": [{"queue_depth": w.queue_depth, "active_requests": w.active_requests, "steps": w.steps}
                          for w in workers]}

    def clear(self) -> None:
        """Forget cached image embeddings and every unpinned KV entry (live requests keep theirs)."""
        self.session.encoder_cache.clear()
        for lane in self.lanes:
            lane.worker.call(lane.store.clear)

    def close(self) -> None:
        """Stop every lane: requests still queued or running fail with RequestCancelledError."""
        for lane in self.lanes:
            lane.worker.close()
