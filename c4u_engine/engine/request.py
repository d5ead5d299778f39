"""One request in the engine: its inputs (loaded and checked in the caller's thread), its plan, its progress.

A request moves through: images encoded -> [prefix] KV held -> rounds (each: [prefix + A] entries held for the
round's first images, comparison rows prefilled, reasoning rows decoded, results recorded to the plan) -> finished,
its future resolved with the plan's result. The plan (a selection policy, or one fixed pair for Engine.compare) says
which ordered pairs to judge; the engine knows it only through the `Plan` protocol below.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from c4u_engine.comparison import Comparison
from c4u_engine.engine.chain import PromptChain
from c4u_engine.engine.kv_store import KVEntry
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.engine.spans import ComparisonSpans, Grid
from c4u_engine.engine.stats import StageTimer
from c4u_engine.imaging import LoadedImage

Pair = tuple[int, int]


class Plan(Protocol):
    judge_modes: frozenset[str]  # the judge modes its rounds may use (the context is checked for each at submit)

    def pending_round(self) -> tuple[list[Pair], str] | None:
        """The round to judge now: its ordered pairs (candidate ids) and judge mode ("fast" | "reason"); None when
        the plan is done. A look: asking again before `record` gives the same round and changes nothing."""

    def record(self, comparisons: Sequence[Comparison]) -> None:
        """The judged comparisons of the pending round (one per pair, any order); the plan moves on."""

    def result(self, stats: dict[str, Any]) -> Any:
        """What the request's future resolves to once the plan is done; `stats`: the engine's counters."""


@dataclass(eq=False)
class Request:
    id: int
    spans: ComparisonSpans
    chain: PromptChain
    images: list[LoadedImage]
    grids: list[Grid]
    pixels: list[np.ndarray | None]  # preprocessed patches (None: the image was in the encoder cache at submit)
    plan: Plan
    max_new_tokens: int
    sampler: Sampler
    use_cache: bool
    deadline: float | None  # time.monotonic() limit
    future: Future
    kv_slots_estimate: int  # KV slots its first round holds (admission control)
    first_step_tokens: int  # new tokens of its prefix and first round (step budget)
    timer: StageTimer = field(default_factory=StageTimer)
    submitted: float = field(default_factory=time.perf_counter)  # when the call began (stats' total)
    enqueued: float = field(default_factory=time.perf_counter)  # when it reached a lane
    # progress, owned by the lane's scheduler (postprocess)
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

    def start_round(self, pairs: list[Pair], mode: str) -> None:
        self.round_pairs, self.round_mode = list(pairs), mode
        self.waiting_rows = list(range(len(pairs)))
        self.rounds += 1


def make_request(session, template, answer, request_id: int, images: list[LoadedImage], profile, plan: Plan, *,
                 max_new_tokens: int, use_cache: bool, timeout: float | None, submitted: float,
                 seconds: dict[str, float], pixels: list[np.ndarray | None] | None = None) -> Request:
    """Everything a request needs before a lane sees it, computed in the caller's thread: prompt spans and chain,
    the context check for every grid pair and judge mode the plan may use, preprocessed pixels of the images the
    encoder cache lacks (`pixels` when the caller already has them, from ModelSession.preprocess_missing), and the
    estimates admission and step budgets use. The plan must have a pending round."""
    spans = ComparisonSpans(session, template, answer, profile, scope="" if use_cache else f"request-{request_id}")
    grids = [session.grid_of(im) for im in images]
    distinct = sorted(set(grids))
    pairs, mode = plan.pending_round()
    for m in sorted(plan.judge_modes):
        longest = max(len(spans.layout(a, b, m).ids) for a in distinct for b in distinct)
        session.check_context(longest, max_new_tokens if m == "reason" else 0)
    if pixels is None:
        pixels = session.preprocess_missing(images, use_cache, seconds)
    elif len(pixels) != len(images):
        raise ValueError(f"{len(pixels)} preprocessed images for {len(images)} images")
    firsts = len({a for a, _ in pairs})
    a_tokens = max(len(spans.prefix_a(g)[0]) for g in distinct) - len(spans.prefix_ids)
    rest = max(len(lay.ids) - lay.a_end for lay in (spans.layout(a, b, mode) for a in distinct for b in distinct))
    request = Request(
        id=request_id, spans=spans, chain=PromptChain(spans, [im.content_hash for im in images], grids),
        images=list(images), grids=grids, pixels=pixels, plan=plan, max_new_tokens=max_new_tokens,
        sampler=Sampler(SamplingParams()), use_cache=use_cache,
        deadline=None if timeout is None else time.monotonic() + timeout, future=Future(),
        kv_slots_estimate=len(spans.prefix_ids) + firsts * (len(spans.prefix_ids) + a_tokens),
        first_step_tokens=len(spans.prefix_ids) + firsts * a_tokens + len(pairs) * rest, submitted=submitted)
    request.timer.seconds.update(seconds)
    return request
