"""The public face: `Engine` on any Qwen2.5-VL-family checkpoint, and `select()` on the built-in model.

The caller's thread checks the arguments and loads and validates the images (rejects and duplicates are sorted out
here; with screen=True the usability screener runs on the engine's screening threads meanwhile), then hands the
selection policy (selection/policy.py: what to judge, and the Selection it ends with) to the engine core
(engine/core.py), whose lanes batch its comparisons with every other live request's and resolve its future.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Sequence

from c4u_engine.comparison import JUDGE_MODES, Comparison
from c4u_engine.engine.config import EngineConfig, check_seconds
from c4u_engine.errors import (C4UError, InvalidImageError, InvalidInputError, LimitExceededError, ProfileError,
                               RequestCancelledError)
from c4u_engine.profile import Profile
from c4u_engine.runners import BACKENDS
from c4u_engine.selection.policy import (PairPolicy, SelectionPolicy, check_mode, check_strategy, check_top_k,
                                         resolve_orders)
from c4u_engine.selection.results import Selection

if TYPE_CHECKING:
    from c4u_engine.batch.stream import BatchResult, SelectionStream

SELECT_MANY_PER_LANE = 16  # select_many's default window per lane (BENCHMARKS.md, "Offline selection")


class Engine:
    """A loaded checkpoint, ready to compare and select creatives; safe to call from many threads at once.

    model_dir: a Hugging Face Qwen2.5-VL directory (config.json, safetensors, tokenizer, chat template,
    preprocessor_config.json; an optional c4u_prompt.json with the checkpoint's own prompt wording or preset).
    device: "cpu" or "cuda[:N]"; dtype: None (float32 on CPU, the checkpoint's dtype on CUDA), "float32",
    "bfloat16" or "float16". precision: None or "fp32" | "fp16" | "bf16" | "int8" | "int4": a float precision is
    its dtype; int8 / int4 run the checkpoint's quantized onnxruntime engine (c4u export CKPT --precision
    int8; the built-in model ships one). int8 results depend slightly on batch composition (README "Precision").
    prompt: a PromptTemplate or a preset name ("c4u", "creative4u_paper") overriding the checkpoint's.
    config: an EngineConfig (limits, budgets, queue); keyword settings override its fields, e.g.
    Engine(path, prefix_cache_bytes=0, max_queued_requests=64). screen_model: the usability screener used by
    select(..., screen=True): a screening model directory or a c4u_engine.screening.Screener (default: the built-in
    one, loaded on first use). runner: an already-built runner over model_dir's model, used instead of loading one
    (e.g. train/engine_bridge.py's InMemoryRunner over weights already on a device; backend, device, dtype and
    precision are then its own).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | None = None, *,
                 precision: str | None = None, backend: str = "auto", prompt=None, config: EngineConfig | None = None,
                 screen_model: Any = None, runner: Any = None, **settings: Any) -> None:
        from c4u_engine.engine.core import EngineCore

        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        config = (config or EngineConfig()).replace(**settings)
        self.model_dir = Path(model_dir)
        self._screen_model, self._screener, self._screener_lock = screen_model, None, threading.Lock()
        self._screen_pool: ThreadPoolExecutor | None = None
        self._closed = False
        if screen_model is not None:
            _ = self.screener  # a wrong screening model directory fails here, naming the problem
        self.core = EngineCore(self.model_dir, config, backend=backend, device=device, dtype=dtype,
                               precision=precision, prompt=prompt, runner=runner)
        self.config, self.runner, self.prompt, self.answer = (self.core.config, self.core.runner, self.core.prompt,
                                                              self.core.answer)

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
        return self.core.stats()

    def clear_caches(self) -> None:
        """Forget cached image embeddings, screening verdicts and every unpinned KV entry (live requests keep
        theirs)."""
        self.core.clear()
        if self._screener is not None:
            self._screener.clear_cache()

    def close(self) -> None:
        """Stop the schedulers: requests still queued or running fail with RequestCancelledError."""
        self.core.close()
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

    # -- generic model access (run on a lane's thread, between its steps) ---------------------------------
    def logits(self, messages: list[dict], assistant_prefix: str = ""):
        """float32 numpy [vocab]: next-token logits after the rendered prompt and `assistant_prefix`."""
        return self.core.logits(messages, assistant_prefix)

    def chat(self, messages: list[dict], max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int | None = None, assistant_prefix: str = "",
             min_new_tokens: int = 0):
        """Generate with a KV cache. Returns an object with .token_ids (new tokens only), .text, .finish_reason."""
        return self.core.chat(messages, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                              assistant_prefix=assistant_prefix, do_sample=do_sample, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed)

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
        images = self.core.session.load_images([image_a, image_b])
        return self._submit(images, profile, PairPolicy(mode), max_new_tokens, use_cache, timeout, t_start, {})

    async def compare_async(self, image_a: Any, image_b: Any, profile: Any, mode: str = "fast",
                            **options: Any) -> Comparison:
        """`compare` for asyncio (image loading in the default executor; cancelling the task cancels it)."""
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(
            None, functools.partial(self.submit_compare, image_a, image_b, profile, mode, **options))
        return await asyncio.wrap_future(future)

    def submit(self, images: Sequence[Any], profile: Any, *, mode: str = "fast", strategy: str = "knockout",
               both_orders: bool | None = None, orders: str | None = None, top_k: int | None = None,
               max_new_tokens: int = 256, strict: bool = False, use_cache: bool = True, timeout: float | None = None,
               screen: bool = False, product_image: Any = None, screen_mode: str = "auto") -> "Future[Selection]":
        """Start a selection; returns a concurrent.futures.Future of its Selection (see `select`).

        Argument errors, bad images under `strict` and a full queue (OverloadedError) raise here; a missed deadline
        (DeadlineExceededError) and failures while running arrive through the future. `future.cancel()` drops the
        request's work and releases its KV."""
        check_mode(mode)
        check_strategy(strategy)
        orders = resolve_orders(orders, both_orders)
        if top_k is not None:
            check_top_k(top_k)
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
            from c4u_engine.screening import screen_candidates

            screening = self._screening_pool().submit(screen_candidates, self.screener, loaded, unique, duplicates,
                                                      profile.title, product_image, screen_mode, use_cache)
            # The judge's preprocessing of every candidate runs meanwhile (both release the GIL); the screened-out
            # candidates' share of it is the price of the overlap.
            try:
                pixels = dict(zip(unique, self.core.session.preprocess_missing([loaded[i] for i in unique],
                                                                               use_cache, timer)))
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
        policy = SelectionPolicy(len(unique), strategy, mode=mode, orders=orders, top_k=top_k, inputs=unique,
                                 duplicates=duplicates, rejected=rejected, flagged=flagged, stats=engine_stats)
        return self._submit([loaded[i] for i in unique], profile, policy, max_new_tokens, use_cache, timeout, t_start,
                            timer, None if pixels is None else [pixels[i] for i in unique])

    def select(self, images: Sequence[Any], profile: Any, *, mode: str = "fast", strategy: str = "knockout",
               both_orders: bool | None = None, orders: str | None = None, top_k: int | None = None,
               max_new_tokens: int = 256, strict: bool = False, use_cache: bool = True, timeout: float | None = None,
               screen: bool = False, product_image: Any = None, screen_mode: str = "auto") -> Selection:
        """Pick the creative this user is most likely to click. See Selection for what comes back.

        mode: "fast" (answer-token probabilities, one forward pass per comparison), "reason" (chain of thought for
        every comparison) or "hybrid" (fast tournament, then reasoning for the comparisons that decided the winner).
        strategy: "knockout" (2(N-1) comparisons with both orders) or "round_robin" (N(N-1)).
        top_k: with the knockout, a ranking whose first k are ordered by a round robin: a knockout until 2k
        candidates remain, then every pair of those (k clamped to the candidates left after rejects and
        duplicates: k >= N / 2 is a full round robin). The round robin already orders everyone: top_k changes nothing.
        orders: "both" (default: every match judged as A/B and B/A, cancelling position bias), "one" (one order:
        half the comparisons) or "adaptive" (one order, then the second only where the first was not decisive:
        max(P(A), 1 - P(A)) below c4u_engine.selection.DECISIVE_P; an extra round). both_orders=True/False is the
        older spelling of orders="both"/"one"; giving both with different meanings is an InvalidInputError.
        Selection.stats says what was played: orders, top_k, comparisons, comparisons_saved (second orders skipped).
        strict: raise on the first invalid image instead of reporting it in Selection.rejected.
        timeout: seconds this request may take (DeadlineExceededError beyond; default config.default_timeout_s).
        screen: first drop the candidates the usability screener judges unusable (RFNet-style; one batched call):
        they go to Selection.rejected as "unusable: <class> (p=...)"; Selection.stats["screening"] counts them and
        holds each screened-out or flagged input's verdict as data ("verdicts": status, label, probability,
        p_available).
        Candidates the screener is unsure of are kept and listed in Selection.flagged; AllScreenedOutError when
        screening would leave nothing to select from.
        product_image: the product cut-out it compares each ad with (path, bytes, PIL, array; transparency kept);
        without one the screener runs in its image+text mode (weaker: see the screening model card);
        screen_mode "full" requires it, "text" ignores it. The profile's title is the product description.
        Many threads may call select at once: the engine batches their comparisons together.
        """
        return self.submit(images, profile, mode=mode, strategy=strategy, both_orders=both_orders, orders=orders,
                           top_k=top_k, max_new_tokens=max_new_tokens, strict=strict, use_cache=use_cache,
                           timeout=timeout, screen=screen, product_image=product_image,
                           screen_mode=screen_mode).result()

    async def select_async(self, images: Sequence[Any], profile: Any, **options: Any) -> Selection:
        """`select` for asyncio: image loading runs in the default executor, the wait does not block the loop;
        cancelling the awaiting task cancels the request (its KV is released)."""
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(None, functools.partial(self.submit, images, profile, **options))
        return await asyncio.wrap_future(future)

    def select_many(self, items: Iterable[Any], *, max_in_flight: int | None = None, ordered: bool = True,
                    **options: Any) -> "SelectionStream":
        """Many selections at full throughput: an iterator of BatchResult (index, id, selection or error) for an
        iterable of items, each an (images, profile[, options]) tuple, a dict with those keys (+ "id") or a
        c4u_engine.batch.BatchItem; `options` are Engine.select keywords applied to every item (an item's own
        options win).

        Up to max_in_flight items are submitted and not yet handed out (default: what the engine's lanes work on at
        once, `default_in_flight`), so the scheduler batches their comparisons together while memory stays bounded
        whatever the input's length (images are loaded when their item is submitted). An item's failure is a typed
        error in its result, never raised; a full queue is waited out. ordered=False hands results out as they
        finish. The stream's stop() takes no more items (those in flight still come out); close() cancels them.
        """
        from c4u_engine.batch.stream import SelectionStream

        self._check_select_options(options)
        if max_in_flight is None:
            max_in_flight = self.default_in_flight
        return SelectionStream(self, items, max_in_flight=max_in_flight, ordered=ordered, defaults=options)

    async def select_many_async(self, items: Iterable[Any], **kwargs: Any) -> AsyncIterator["BatchResult"]:
        """`select_many` for asyncio: an async iterator of BatchResult; waiting does not block the loop, and leaving
        the iteration early cancels the items in flight."""
        stream = self.select_many(items, **kwargs)
        end = object()
        try:
            while (result := await asyncio.to_thread(next, stream, end)) is not end:
                yield result
        finally:
            stream.close()

    @property
    def default_in_flight(self) -> int:
        """select_many's default window: enough requests for every lane's decode batch."""
        config = self.core.config
        return config.lanes * min(config.max_active_requests, SELECT_MANY_PER_LANE)

    def _check_select_options(self, options: dict[str, Any]) -> None:
        known = {name for name, p in inspect.signature(self.submit).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInputError(f"unknown select options {unknown}; valid: {sorted(known)}")
        if "mode" in options:
            check_mode(options["mode"])
        if "strategy" in options:
            check_strategy(options["strategy"])

    # -- helpers ---------------------------------------------------------------------------------------
    def _submit(self, images: list, profile: Profile, plan, max_new_tokens: int, use_cache: bool,
                timeout: float | None, t_start: float, seconds: dict[str, float], pixels: list | None = None) -> Future:
        if timeout is not None:
            check_seconds("timeout", timeout)
        return self.core.submit(images, profile, plan, max_new_tokens=max_new_tokens, use_cache=use_cache,
                                timeout=timeout, submitted=t_start, seconds=seconds, pixels=pixels)

    def _profile(self, profile: Any) -> Profile:
        """Coerce, and refuse text that smuggles in the model's special tokens (they would break the prompt)."""
        profile = Profile.coerce(profile)
        specials = self.core.session.tokenizer.special_tokens
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
                im = self.core.session.load_images([obj])[0]
                self.core.session.grid_of(im)  # aspect ratios Qwen cannot handle are rejected here
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


def select_many(items: Iterable[Any], **options: Any) -> "SelectionStream":
    """Many selections with the built-in model (an iterator of BatchResult). Options as Engine.select_many."""
    return default_engine().select_many(items, **options)
