"""The public face: `Engine` on any Qwen2.5-VL-family checkpoint, and `select()` on the built-in model.

The caller's thread checks the arguments and loads and validates the images (rejects and duplicates are sorted out
here); engine.request.make_request then preprocesses what the encoder cache lacks and cuts the prompt into spans,
still in the caller's thread, and the request goes to the engine's scheduler, which batches its work with every
other live request (engine/scheduler.py; with EngineConfig.lanes > 1, to the least loaded of several schedulers,
engine/lanes.py). With screen=True the usability screener runs on the engine's screening threads meanwhile. The
selection policy (selection/policy.py) says what to judge.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from c4u_engine.comparison import JUDGE_MODES, Comparison
from c4u_engine.engine.config import EngineConfig, check_seconds
from c4u_engine.engine.lanes import pick_lane
from c4u_engine.errors import (C4UError, InvalidImageError, InvalidInputError, LimitExceededError, ProfileError,
                               RequestCancelledError)
from c4u_engine.profile import Profile
from c4u_engine.runners import BACKENDS
from c4u_engine.selection.policy import PairPolicy, SelectionPolicy, check_mode, check_strategy
from c4u_engine.selection.results import Selection


class Engine:
    """A loaded checkpoint, ready to compare and select creatives; safe to call from many threads at once.

    model_dir: a Hugging Face Qwen2.5-VL directory (config.json, safetensors, tokenizer, chat template,
    preprocessor_config.json; an optional c4u_prompt.json with the checkpoint's own prompt wording or preset).
    device: "cpu" or "cuda[:N]"; dtype: None (float32 on CPU, the checkpoint's dtype on CUDA), "float32",
    "bfloat16" or "float16". precision: None or "fp32" | "fp16" | "bf16" | "int8" | "int4": a float precision is
    its dtype; int8 / int4 run the checkpoint's quantized onnxruntime engine (python -m export CKPT --precision
    int8; the built-in model ships one). int8 results depend slightly on batch composition (README "Precision").
    prompt: a PromptTemplate or a preset name ("c4u", "creative4u_paper") overriding the checkpoint's. config: an EngineConfig (limits, budgets, queue); keyword settings override its fields, e.g.
    Engine(path, prefix_cache_bytes=0, max_queued_requests=64). screen_model: the usability screener used by
    select(..., screen=True): a screening model directory or a c4u_engine.screening.Screener (default: the built-in
    one, loaded on first use). runner: an already-built runner over model_dir's model, used instead of loading one
    (e.g. train/engine_bridge.py's InMemoryRunner over weights already on a device).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None, *,
                 precision: str | None = None, backend: str = "auto", prompt=None, config: EngineConfig | None = None,
                 screen_model: Any = None, runner: Any = None, **settings: Any) -> None:
        from c4u_engine.engine.answer import AnswerTokens
        from c4u_engine.engine.kv_store import KVStore
        from c4u_engine.engine.lanes import lane_threads, make_lanes, planned_lanes, resolve_lanes
        from c4u_engine.engine.model_engine import ModelEngine
        from c4u_engine.engine.prompt import prompt_template
        from c4u_engine.engine.scheduler import Scheduler
        from c4u_engine.engine.spans import check_spans
        from c4u_engine.runners import create_runner

        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        self.config = (config or EngineConfig()).replace(**settings)
        self.model_dir = Path(model_dir)
        self._screen_model, self._screener, self._screener_lock = screen_model, None, threading.Lock()
        self._screen_pool: ThreadPoolExecutor | None = None
        self._closed = False
        if screen_model is not None:
            self.screener  # a wrong screening model directory fails here, naming the problem
        self.prompt = prompt_template(prompt, self.model_dir)
        # runner: an already-built runner over model_dir's model (benchmarks/bench_gpu_end_to_end.py shares one
        # set of in-memory weights with transformers); backend, device, dtype and precision are then its own
        planned = planned_lanes(self.config.lanes, device)
        self.runner = runner if runner is not None else create_runner(
            self.model_dir, backend=backend, device=device, dtype=dtype, precision=precision,
            intra_op_threads=lane_threads(planned))
        self.config = self.config.replace(lanes=resolve_lanes(self.config.lanes, planned, self.runner,
                                                              built_here=runner is None))
        self._core = ModelEngine(self.model_dir, self.runner, config=self.config)
        self.answer = AnswerTokens.resolve(
            self._core.tokenizer, lambda prefix: self._core.render([{"role": "user", "content": "x"}], prefix),
            self.prompt)

        def make_store(capacity: int) -> KVStore:
            if self.config.kv_layout == "paged":
                from c4u_engine.engine.paged_kv_store import PagedKVStore

                return PagedKVStore(capacity, self.runner, self.config.kv_block_size)
            return KVStore(capacity, self.runner.kv_nbytes)

        self._lanes = make_lanes(self.config.lanes, make_store, lambda store: Scheduler(
            self._core, store, self.answer, self.prompt.reason_prefix, self.config), self.config.prefix_cache_bytes)
        # Lane 0 also runs the generic model calls (logits, chat).
        self._scheduler, self._store = self._lanes[0].scheduler, self._lanes[0].store
        self._request_ids = itertools.count(1)
        check_spans(self._core, self.prompt, self.answer)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.runner.name

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def precision(self) -> str:
        """fp32 | fp16 | bf16 | int8 | int4: what the runner computes in."""
        return self.runner.precision

    @property
    def max_candidates(self) -> int:
        return self.config.max_candidates

    @property
    def answer_token_ids(self) -> tuple[int, int]:
        """Token ids of "A" and "B" as the model emits them right after the fast-mode assistant prefix."""
        return self.answer.ids

    def load_stats(self) -> dict[str, Any]:
        """Queue depth, live requests, scheduler steps, rows per decoder call, cache sizes and hit counts (summed over
        the lanes; "lanes" has each lane's queue depth, live requests and steps)."""
        schedulers, stores, enc = [lane.scheduler for lane in self._lanes], [lane.store for lane in self._lanes], \
            self._core.encoder_cache
        histogram = [sum(column) for column in zip(*(s.rows_histogram for s in schedulers))]
        return {"queue_depth": sum(s.queue_depth for s in schedulers),
                "active_requests": sum(s.active_requests for s in schedulers),
                "steps": sum(s.steps for s in schedulers),
                "batch_rows": [n for s in schedulers for n in s.batch_rows[-256:]],
                "model_calls": sum(s.calls for s in schedulers), "model_call_rows": sum(s.rows_total for s in schedulers),
                "model_call_rows_histogram": histogram, "prefix_cache_entries": sum(len(t) for t in stores),
                "prefix_cache_bytes": sum(t.nbytes for t in stores),
                "prefix_cache_pinned_bytes": sum(t.pinned_bytes for t in stores),
                "prefix_cache_hits": sum(t.hits for t in stores), "prefix_cache_misses": sum(t.misses for t in stores),
                "encoder_cache_hits": enc.hits, "encoder_cache_misses": enc.misses,
                "lanes": [{"queue_depth": lane.scheduler.queue_depth, "active_requests": lane.scheduler.active_requests,
                           "steps": lane.scheduler.steps} for lane in self._lanes]}

    def clear_caches(self) -> None:
        """Forget cached image embeddings, screening verdicts and every unpinned KV entry (live requests keep
        theirs)."""
        self._core.encoder_cache.clear()
        if self._screener is not None:
            self._screener.clear_cache()
        for lane in self._lanes:
            lane.scheduler.call(lane.store.clear)

    def close(self) -> None:
        """Stop the schedulers: requests still queued or running fail with RequestCancelledError."""
        for lane in self._lanes:
            lane.scheduler.close()
        with self._screener_lock:
            self._closed = True
            if self._screen_pool is not None:
                self._screen_pool.shutdown(wait=False)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def screener(self):
        """The usability screener (c4u_engine.screening.Screener), loaded on first use."""
        with self._screener_lock:
            if self._screener is None:
                from c4u_engine.screening import Screener

                source = self._screen_model
                self._screener = source if isinstance(source, Screener) else Screener(source)
            return self._screener

    def _screening_pool(self) -> ThreadPoolExecutor:
        """Threads that screen while the callers' threads preprocess for the judge (one per concurrent caller up to
        the cores: the screener's onnxruntime session is safe to share)."""
        with self._screener_lock:
            if self._closed:
                raise RequestCancelledError("the engine is closed")
            if self._screen_pool is None:
                self._screen_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                                       thread_name_prefix="c4u-screen")
            return self._screen_pool

    # -- generic model access (run on the scheduler's thread, between its steps) -------------------------
    def logits(self, messages: list[dict], assistant_prefix: str = ""):
        """float32 numpy [vocab]: next-token logits after the rendered prompt and `assistant_prefix`."""
        return self._scheduler.call(lambda: self._core.logits(messages, assistant_prefix))

    def chat(self, messages: list[dict], max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int | None = None, assistant_prefix: str = "",
             min_new_tokens: int = 0):
        """Generate with a KV cache. Returns an object with .token_ids (new tokens only), .text, .finish_reason."""
        from c4u_engine.engine.sampling import SamplingParams

        params = SamplingParams(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        return self._scheduler.call(lambda: self._core.chat(
            messages, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            assistant_prefix=assistant_prefix, sampling=params))

    # -- comparisons -----------------------------------------------------------------------------------
    def comparison_messages(self, image_a: Any, image_b: Any, profile: Any,
                            mode: str = "fast") -> tuple[list[dict], str]:
        """(messages, assistant_prefix): exactly what the engine feeds the model for one comparison, so the
        decision can be replayed with transformers (apply_chat_template + assistant_prefix)."""
        check_mode(mode, JUDGE_MODES)
        return self.prompt.messages(Profile.coerce(profile), image_a, image_b), \
            self.answer.assistant_prefix(self.prompt, mode)

    def compare(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast", *, max_new_tokens: int = 256,
                use_cache: bool = True, timeout: float | None = None) -> Comparison:
        """Judge one ordered pair (image_a shown as Creative A). `mode` "fast" or "reason"."""
        return self.submit_compare(image_a, image_b, profile, mode, max_new_tokens=max_new_tokens,
                                   use_cache=use_cache, timeout=timeout).result()

    def submit_compare(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast", *,
                       max_new_tokens: int = 256, use_cache: bool = True,
                       timeout: float | None = None) -> "Future[Comparison]":
        """`compare` as a concurrent.futures.Future (errors and cancellation as in `submit`)."""
        check_mode(mode, JUDGE_MODES)
        _check_max_new_tokens(max_new_tokens)
        t_start = time.perf_counter()
        profile = self._profile(profile)
        images = self._core.load_images([image_a, image_b])
        return self._submit(images, profile, PairPolicy(mode), {mode}, lambda plan, stats: plan.comparison,
                            max_new_tokens, use_cache, timeout, t_start, {})

    async def compare_async(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast",
                            **options: Any) -> Comparison:
        """`compare` for asyncio (image loading in the default executor; cancelling the task cancels it)."""
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(
            None, functools.partial(self.submit_compare, image_a, image_b, profile, mode, **options))
        return await asyncio.wrap_future(future)

    def submit(self, images: Sequence[Any], profile: Any, *, mode: str = "fast", strategy: str = "knockout",
               both_orders: bool = True, max_new_tokens: int = 256, strict: bool = False, use_cache: bool = True,
               timeout: float | None = None, screen: bool = False, product_image: Any = None,
               screen_mode: str = "auto") -> "Future[Selection]":
        """Start a selection; returns a concurrent.futures.Future of its Selection (see `select`).

        Argument errors, bad images under `strict` and a full queue (OverloadedError) raise here; a missed deadline
        (DeadlineExceededError) and failures while running arrive through the future. `future.cancel()` drops the
        request's work and releases its KV."""
        check_mode(mode)
        check_strategy(strategy)
        _check_max_new_tokens(max_new_tokens)
        t_start = time.perf_counter()
        if isinstance(images, (str, bytes, Path)) or not hasattr(images, "__len__"):
            raise InvalidInputError("images must be a sequence of images (paths, bytes, PIL images or arrays)")
        if len(images) > self.config.max_candidates:
            raise LimitExceededError(f"{len(images)} candidates exceed max_candidates={self.config.max_candidates}")
        profile = self._profile(profile)
        timer: dict[str, float] = {}
        loaded, rejected = self._load_candidates(images, strict, timer)
        unique, duplicates = _deduplicate(loaded)
        engine_stats: dict[str, Any] = {"backend": self.backend, "device": self.device, "precision": self.precision}
        pixels, flagged = None, {}
        if screen and unique:
            from c4u_engine.engine.request import preprocess_missing
            from c4u_engine.screening import screen_candidates

            t0 = time.perf_counter()
            screening = self._screening_pool().submit(screen_candidates, self.screener, loaded, unique, duplicates,
                                                      profile.title, product_image, screen_mode, use_cache)
            # The judge's preprocessing of every candidate runs meanwhile (both release the GIL); the screened-out
            # candidates' share of it is the price of the overlap.
            try:
                pixels = dict(zip(unique, preprocess_missing(self._core, [loaded[i] for i in unique], use_cache,
                                                             timer)))
            finally:
                t1 = time.perf_counter()
                screened = screening.result()
            unique, duplicates, flagged, engine_stats["screening"] = (screened.kept, screened.duplicates,
                                                                      screened.flagged, screened.stats)
            rejected.update(screened.rejected)
            timer["screen"] = engine_stats["screening"]["seconds"]
            timer["screen_wait"] = time.perf_counter() - t1  # what screening added beyond the overlap
        if not unique:
            detail = "; ".join(f"#{i}: {r}" for i, r in rejected.items()) or "no images given"
            raise InvalidInputError(f"no valid candidate images ({detail})")
        policy = SelectionPolicy(len(unique), strategy, both_orders, mode)

        def finish(plan: SelectionPolicy, stats: dict) -> Selection:
            stats = {**stats, **engine_stats, "prefix_cache_entries": sum(len(lane.store) for lane in self._lanes),
                     "prefix_cache_bytes": sum(lane.store.nbytes for lane in self._lanes)}
            return plan.selection(unique, duplicates=duplicates, rejected=rejected, stats=stats, flagged=flagged)

        modes = {"fast", "reason"} if mode == "hybrid" else {mode}
        return self._submit([loaded[i] for i in unique], profile, policy, modes, finish, max_new_tokens,
                            use_cache, timeout, t_start, timer, None if pixels is None else [pixels[i] for i in unique])

    def select(self, images: Sequence[Any], profile: Any, *, mode: str = "fast", strategy: str = "knockout",
               both_orders: bool = True, max_new_tokens: int = 256, strict: bool = False,
               use_cache: bool = True, timeout: float | None = None, screen: bool = False, product_image: Any = None,
               screen_mode: str = "auto") -> Selection:
        """Pick the creative this user is most likely to click. See Selection for what comes back.

        mode: "fast" (answer-token probabilities, one forward pass per comparison), "reason" (chain of thought for
        every comparison) or "hybrid" (fast tournament, then reasoning for the comparisons that decided the winner).
        strategy: "knockout" (2(N-1) comparisons with both orders) or "round_robin" (N(N-1)).
        strict: raise on the first invalid image instead of reporting it in Selection.rejected.
        timeout: seconds this request may take (DeadlineExceededError beyond; default config.default_timeout_s).
        screen: first drop the candidates the usability screener judges unusable (RFNet-style; one batched call):
        they go to Selection.rejected as "unusable: <class> (p=...)"; Selection.stats["screening"] counts them.
        Candidates the screener is unsure of are kept and listed in Selection.flagged; AllScreenedOutError when
        screening would leave nothing to select from.
        product_image: the product cut-out it compares each ad with (path, bytes, PIL, array; transparency kept);
        without one the screener runs in its image+text mode (weaker: see the screening model card);
        screen_mode "full" requires it, "text" ignores it. The profile's title is the product description.
        Many threads may call select at once: the engine batches their comparisons together.
        """
        return self.submit(images, profile, mode=mode, strategy=strategy, both_orders=both_orders,
                           max_new_tokens=max_new_tokens, strict=strict, use_cache=use_cache,
                           timeout=timeout, screen=screen, product_image=product_image,
                           screen_mode=screen_mode).result()

    async def select_async(self, images: Sequence[Any], profile: Any, **options: Any) -> Selection:
        """`select` for asyncio: image loading runs in the default executor, the wait does not block the loop;
        cancelling the awaiting task cancels the request (its KV is released)."""
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(None, functools.partial(self.submit, images, profile, **options))
        return await asyncio.wrap_future(future)

    # -- helpers ---------------------------------------------------------------------------------------
    def _submit(self, images: list, profile: Profile, plan, modes: set[str], finish: Callable, max_new_tokens: int,
                use_cache: bool, timeout: float | None, t_start: float, seconds: dict[str, float],
                pixels: list | None = None) -> Future:
        from c4u_engine.engine.request import make_request

        timeout = self.config.default_timeout_s if timeout is None else check_seconds("timeout", timeout)
        if plan.next_round() is None:  # one candidate: nothing to judge
            future: Future = Future()
            future.set_result(finish(plan, {"seconds": {"total": round(time.perf_counter() - t_start, 6)}}))
            return future
        request = make_request(self._core, self.prompt, self.answer, next(self._request_ids), images, profile, plan,
                               modes, finish, max_new_tokens=max_new_tokens, use_cache=use_cache, timeout=timeout,
                               submitted=t_start, seconds=seconds, pixels=pixels)
        pick_lane(self._lanes, zlib.crc32(request.spans.prefix_ids.tobytes())).scheduler.submit(request)
        return request.future

    def _profile(self, profile: Any) -> Profile:
        """Coerce, and refuse text that smuggles in the model's special tokens (they would break the prompt)."""
        profile = Profile.coerce(profile)
        specials = self._core.tokenizer.special_tokens
        for name, text in (("title", profile.title), ("extra", profile.extra), ("queries", " ".join(profile.queries))):
            for s in specials:
                if s in text:
                    raise ProfileError(f"profile.{name} contains the model's special token {s!r}")
        return profile

    def _load_candidates(self, images: Sequence[Any], strict: bool, seconds: dict) -> tuple[dict, dict[int, str]]:
        t0 = time.perf_counter()
        loaded, rejected = {}, {}
        for i, obj in enumerate(images):
            try:
                im = self._core.load_images([obj])[0]
                self._core.grid_of(im)  # aspect ratios Qwen cannot handle are rejected here
            except InvalidImageError as exc:
                if strict:  # the same class (e.g. ImageTooLargeError), naming the candidate
                    raise type(exc)(f"candidate #{i}: {exc}") from exc
                rejected[i] = str(exc)
                continue
            except C4UError as exc:  # e.g. an unsupported object type: same policy
                if strict:
                    raise
                rejected[i] = str(exc)
                continue
            loaded[i] = im
        seconds["load_images"] = time.perf_counter() - t0
        return loaded, rejected


def _check_max_new_tokens(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"max_new_tokens must be a positive int, got {n!r}")


def _deduplicate(loaded: dict) -> tuple[list[int], dict[int, int]]:
    """Unique input indices (first occurrence of each image content) and duplicate -> original."""
    first_of: dict[str, int] = {}
    unique, duplicates = [], {}
    for i, im in loaded.items():
        if im.content_hash in first_of:
            duplicates[i] = first_of[im.content_hash]
        else:
            first_of[im.content_hash] = i
            unique.append(i)
    return unique, duplicates


# -- the built-in model --------------------------------------------------------------------------------
_DEFAULT_ENGINE: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engine() -> Engine:
    """The built-in model, loaded once (lazily, thread-safe)."""
    global _DEFAULT_ENGINE
    with _DEFAULT_LOCK:
        if _DEFAULT_ENGINE is None:
            from c4u_engine.builtin import builtin_model_dir

            _DEFAULT_ENGINE = Engine(builtin_model_dir())
        return _DEFAULT_ENGINE


def select(images: Sequence[Any], profile: Any, **options: Any) -> Selection:
    """Select among candidate creatives with the built-in model. Options as Engine.select."""
    return default_engine().select(images, profile, **options)
