"""Which sessions a lone call runs on: the runner's all-core ones or its lane's one-thread ones, by measured time.

Every core pays off on large calls (a ~40M model's prefill: 1.7-1.9x faster than one thread) and costs on small ones
(a knockout round of 2 pairs on the 3.8M built-in model: its lone request 8-22% slower than on one thread;
BENCHMARKS.md, "Knockout: smaller calls"). Where the line falls depends on the model, the call and the machine, so
it is measured per engine rather than fixed on one model: per graph and call size (log2 of rows x new tokens, or
patches), the first lone calls alternate between the two session sets, then the faster one (median of its recent
times) runs, and the other is timed again every RECHECK_EVERY calls of that size, since loads drift. Both session
sets compute the same numbers (the thread count does not change onnxruntime's CPU results), so the choice only moves
time.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

TRIALS = 2  # timed calls of each kind per size before choosing
RECHECK_EVERY = 50  # then one call of the other kind in this many, to follow a drifting machine
KEPT = 5  # recent times per kind that the median is over


@dataclass
class _Size:
    lone: deque = field(default_factory=lambda: deque(maxlen=KEPT))
    lane: deque = field(default_factory=lambda: deque(maxlen=KEPT))
    calls: int = 0


class LoneChoice:
    """use_lone(key) before a lone call, record(key, lone, seconds) after it; key: (graph, size bucket)."""

    def __init__(self) -> None:
        self._sizes: dict[tuple, _Size] = {}
        self._lock = threading.Lock()  # lone calls are one at a time, but a lane may start while one runs

    def use_lone(self, key: tuple) -> bool:
        with self._lock:
            size = self._sizes.setdefault(key, _Size())
            size.calls += 1
            if len(size.lone) < TRIALS or len(size.lane) < TRIALS:
                return len(size.lone) <= len(size.lane)  # alternate, the all-core sessions first
            faster_is_lone = statistics.median(size.lone) <= statistics.median(size.lane)
            return faster_is_lone != (size.calls % RECHECK_EVERY == 0)

    def record(self, key: tuple, lone: bool, seconds: float) -> None:
        with self._lock:
            size = self._sizes.setdefault(key, _Size())
            (size.lone if lone else size.lane).append(seconds)

    def timings(self) -> dict[tuple, tuple[list[float], list[float]]]:
        """key -> (recent all-core times, recent one-thread times): what the choice rests on."""
        with self._lock:
            return {key: (list(s.lone), list(s.lane)) for key, s in self._sizes.items()}


def call_size(graph: int, feeds: dict) -> int:
    """The size bucket of a call: log2 of its new tokens over all rows (decoder) or of its patches (vision)."""
    if graph == 0:
        work = feeds["pixel_patches"].shape[0]
    else:
        shape = feeds["inputs_embeds"].shape
        work = shape[0] * shape[1]
    return int(work).bit_length()
