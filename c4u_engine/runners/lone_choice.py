"""Which sessions a lone call runs on: the runner's all-core ones or its lane's one-thread ones, by measured time.

Every core pays off on large calls (a ~40M model's prefill: 1.7-1.9x faster than one thread) and costs on small ones
(a knockout round of 2 pairs on the 3.8M built-in model: its lone request 8-22% slower than on one thread;
BENCHMARKS.md, "Knockout: smaller calls"). Where the line falls depends on the model, the call and the machine, so
it is measured per engine rather than fixed on one model: per graph and call size (log2 of rows x new tokens, or
patches), the first lone calls run on every core; a size whose calls take under EXPLORE_BELOW_S there (where the
per-op cost of waking and joining threads is not small against the ops themselves) is then timed on one thread too,
and the faster set (median time per unit of work over its recent calls) runs from then on, the other re-timed every
RECHECK_EVERY calls of that size since loads drift. Longer calls always take every core: timing them on one thread
would cost a user's first requests up to twice their time (a ~40M model's lone selection: 1.25x slower over 5
selections when every size was tried both ways). Both session sets compute the same numbers (the thread count does
not change onnxruntime's CPU results), so the choice only moves time.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

TRIALS = 2  # timed calls of each kind per size before choosing
EXPLORE_BELOW_S = 0.02  # all-core calls at least this long keep every core, untried on one thread
RECHECK_EVERY = 50  # then one call of the other kind in this many, to follow a drifting machine
KEPT = 5  # recent times per kind that the median is over


@dataclass
class _Size:
    lone: deque = field(default_factory=lambda: deque(maxlen=KEPT))  # (seconds, seconds per unit of work)
    lane: deque = field(default_factory=lambda: deque(maxlen=KEPT))
    calls: int = 0

    def median(self, kind: str, item: int) -> float:
        return statistics.median(x[item] for x in getattr(self, kind))


class LoneChoice:
    """use_lone(key) before a lone call, record(key, lone, seconds, work) after it; key: (graph, size bucket)."""

    def __init__(self) -> None:
        self._sizes: dict[tuple, _Size] = {}
        self._lock = threading.Lock()  # lone calls are one at a time, but a lane may start while one runs

    def use_lone(self, key: tuple) -> bool:
        with self._lock:
            size = self._sizes.setdefault(key, _Size())
            size.calls += 1
            if len(size.lone) < TRIALS:
                return True
            if not size.lane and size.median("lone", 0) >= EXPLORE_BELOW_S:
                return True  # long enough for every core to pay: never tried on one thread
            if len(size.lane) < TRIALS:
                return False
            faster_is_lone = size.median("lone", 1) <= size.median("lane", 1)
            return faster_is_lone != (size.calls % RECHECK_EVERY == 0)

    def record(self, key: tuple, lone: bool, seconds: float, work: int) -> None:
        with self._lock:
            size = self._sizes.setdefault(key, _Size())
            (size.lone if lone else size.lane).append((seconds, seconds / max(1, work)))

    def timings(self) -> dict[tuple, tuple[list[float], list[float]]]:
        """key -> (recent all-core call times, recent one-thread call times): what the choice rests on."""
        with self._lock:
            return {key: ([x[0] for x in s.lone], [x[0] for x in s.lane]) for key, s in self._sizes.items()}


def call_work(graph: int, feeds: dict) -> int:
    """A call's work: its new tokens over all rows (decoder) or its patches (vision)."""
    if graph == 0:
        return int(feeds["pixel_patches"].shape[0])
    shape = feeds["inputs_embeds"].shape
    return int(shape[0] * shape[1])
