"""Counters the engine reports: a request's seconds per stage and counts (Selection.stats), a lane's model calls."""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # rows per decoder call, histogram bounds (serving/metrics.py)


@dataclass
class StageTimer:
    """Seconds per stage and counters of one request, reported in Selection.stats."""

    seconds: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def add_time(self, stage: str, t0: float) -> None:
        self.add_seconds(stage, time.perf_counter() - t0)

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(n)


class CallStats:
    """Decoder calls of one lane: how many, the rows they held, a histogram over ROW_BUCKETS, the latest sizes."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows_total = 0
        self.rows_histogram = [0] * (len(ROW_BUCKETS) + 1)
        self.batch_rows: list[int] = []  # rows of the latest calls (bounded)

    def note(self, rows: int) -> None:
        self.batch_rows.append(rows)
        if len(self.batch_rows) > 4096:
            del self.batch_rows[:2048]
        self.calls += 1
        self.rows_total += rows
        self.rows_histogram[bisect.bisect_left(ROW_BUCKETS, rows)] += 1


def charge(timers, stage: str, seconds: float) -> None:
    """A batched call's time charged to every request in it (each distinct timer once)."""
    for timer in {id(t): t for t in timers}.values():
        timer.add_seconds(stage, seconds)
