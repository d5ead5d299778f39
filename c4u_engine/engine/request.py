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
from c4u_engine.engine.sampling import Sampler
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
