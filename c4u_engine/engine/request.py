"""One request in the scheduler: its inputs (loaded and checked in the caller's thread), its plan, its progress.

A request moves through: images encoded -> [prefix] KV held -> rounds (each: [prefix + A] entries held for the
round's first images, comparison rows prefilled, reasoning rows decoded, results recorded to the plan) -> finished.
The plan (a selection policy, or one fixed pair for Engine.compare) says which ordered pairs to judge next, in which
judge mode; the engine knows it only through the `Plan` protocol below.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from c4u_engine.comparison import Comparison
from c4u_engine.engine.kv_store import KVEntry
from c4u_engine.engine.model_engine import StageTimer
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.engine.spans import ComparisonSpans, Grid
from c4u_engine.imaging import LoadedImage

Pair = tuple[int, int]


class Plan(Protocol):
    def next_round(self) -> tuple[list[Pair], str] | None:
        """The next round's ordered pairs (candidate ids) and judge mode ("fast" | "reason"); None when done."""

    def record(self, comparisons: Sequence[Comparison]) -> None:
        """The judged comparisons of the round just asked for."""


@dataclass(eq=False)
class Request:
    id: int
    spans: ComparisonSpans
    images: list[LoadedImage]
    grids: list[Grid]
    pixels: list[np.ndarray | None]  # preprocessed patches (None: the image was in the encoder cache at submit)
    plan: Plan
    finish: Callable[[Plan, dict], Any]  # (plan, stats) -> the future's result
    max_new_tokens: int
    sampler: Sampler
    use_cache: bool
    deadline: float | None  # time.monotonic() limit
    future: Future
    kv_slots_estimate: int  # KV slots its first round holds (admission control)
    first_step_tokens: int  # new tokens of its prefix and first round (step budget)
    timer: StageTimer = field(default_factory=StageTimer)
    submitted: float = field(default_factory=time.perf_counter)  # when the call began (stats' total)
    enqueued: float = field(default_factory=time.perf_counter)  # when it reached the scheduler
    # progress, owned by the scheduler thread
    embeds: list | None = None
    prefix: KVEntry | None = None
    round_pairs: list[Pair] | None = None
    round_mode: str = "fast"
    a_entries: dict[int, KVEntry] = field(default_factory=dict)
    waiting_rows: list[int] = field(default_factory=list)  # round pair indices not yet prefilled
    results: dict[int, Comparison] = field(default_factory=dict)
    decoding: int = 0  # rows in the decode batch
    rounds: int = 0

    @property
    def abandoned(self) -> bool:
        return self.future.cancelled()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def held_entries(self) -> list[KVEntry]:
        return ([self.prefix] if self.prefix is not None else []) + list(self.a_entries.values())

    def round_complete(self) -> bool:
        return self.round_pairs is not None and len(self.results) == len(self.round_pairs)

    def a_key(self, candidate: int):
        return self.spans.prefix_a_key(self.images[candidate].content_hash, self.grids[candidate])


def preprocess_missing(core, images: Sequence[LoadedImage], use_cache: bool,
                       seconds: dict[str, float]) -> list[np.ndarray | None]:
    """Preprocessed pixels of the images the encoder cache lacks (None for the others), in one native call that
    releases the GIL: the caller may run it while its screening runs on another thread."""
    t0 = time.perf_counter()
    pixels: list[np.ndarray | None] = [None] * len(images)
    key = (core.preprocess_params.key(), core.fingerprint)
    todo = [i for i, im in enumerate(images) if not (use_cache and (im.content_hash, *key) in core.encoder_cache)]
    if todo:
        values, grid = core.preprocess([images[i].pixels for i in todo])
        bounds = np.cumsum([0, *(int(np.prod(g)) for g in grid)])
        for k, i in enumerate(todo):
            pixels[i] = values[bounds[k] : bounds[k + 1]]
    seconds["preprocess"] = seconds.get("preprocess", 0.0) + time.perf_counter() - t0
    return pixels


def make_request(core, template, answer, request_id: int, images: list[LoadedImage], profile, plan: Plan,
                 modes: set[str], finish: Callable[[Plan, dict], Any], *, max_new_tokens: int, use_cache: bool,
                 timeout: float | None, submitted: float, seconds: dict[str, float],
                 pixels: list[np.ndarray | None] | None = None) -> Request:
    """Everything a request needs before the scheduler sees it, computed in the caller's thread: prompt spans, the
    context check for every grid pair and mode the plan may use, preprocessed pixels of the images the encoder cache
    lacks (`pixels` when the caller already has them, from preprocess_missing), and the estimates admission and step
    budgets use."""

    spans = ComparisonSpans(core, template, answer, profile, scope="" if use_cache else f"request-{request_id}")
    grids = [core.grid_of(im) for im in images]
    distinct = sorted(set(grids))
    for mode in sorted(modes):
        longest = max(len(spans.layout(a, b, mode).ids) for a in distinct for b in distinct)
        core.check_context(longest, max_new_tokens if mode == "reason" else 0)
    if pixels is None:
        pixels = preprocess_missing(core, images, use_cache, seconds)
    elif len(pixels) != len(images):
        raise ValueError(f"{len(pixels)} preprocessed images for {len(images)} images")
    pairs, mode = plan.next_round()
    firsts = len({a for a, _ in pairs})
    a_tokens = max(len(spans.prefix_a(g)[0]) for g in distinct) - len(spans.prefix_ids)
    rest = max(len(lay.ids) - lay.a_end for lay in (spans.layout(a, b, mode) for a in distinct for b in distinct))
    request = Request(
        id=request_id, spans=spans, images=list(images), grids=grids, pixels=pixels, plan=plan, finish=finish,
        max_new_tokens=max_new_tokens, sampler=Sampler(SamplingParams()), use_cache=use_cache,
        deadline=None if timeout is None else time.monotonic() + timeout, future=Future(),
        kv_slots_estimate=len(spans.prefix_ids) + firsts * (len(spans.prefix_ids) + a_tokens),
        first_step_tokens=len(spans.prefix_ids) + firsts * a_tokens + len(pairs) * rest, submitted=submitted)
    request.timer.seconds.update(seconds)
    return request
