"""Lanes: several schedulers side by side on one loaded model (EngineConfig.lanes), and which one takes a request.

Each lane is a worker (its own thread) over a scheduler with its own KV store and decode batch; the model session
(runner, tokenizer, encoder cache) is shared. A request runs wholly in one lane, so its results are what one
scheduler gives. On a CPU this is how more cores turn into throughput: one-thread model calls of two lanes run at the
same time, where one scheduler's two-thread calls over a few rows leave cores waiting at every operator
(BENCHMARKS.md, "Lanes"). Whether a runner can run calls side by side is its declaration (RunnerCapabilities).
With the lanes left to the engine, a runner that can (onnxruntime: lone_threads) also keeps sessions on every core
for calls made while at most one lane has requests (the engine's lone check), so one request alone is not held to
one lane's threads: it runs as fast as with one lane (BENCHMARKS.md, "A lone request on every core").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from c4u_engine.engine.config import AUTO_MAX_LANES
from c4u_engine.engine.kv_store import KVStore
from c4u_engine.engine.worker import Worker
from c4u_engine.errors import InvalidInputError


@dataclass
class Lane:
    worker: Worker
    store: KVStore

    @property
    def load(self) -> int:
        """Requests waiting or live in this lane."""
        return self.worker.load


def pick_lane(lanes: list[Lane], affinity: int) -> Lane:
    """The least loaded lane; among equals the one `affinity` (a hash of the request's prompt prefix) names first,
    so repeated requests of one user meet their cached KV while the lanes are not busy."""
    start = affinity % len(lanes)
    ordered = lanes[start:] + lanes[:start]
    return min(ordered, key=lambda lane: lane.load)


def planned_lanes(lanes: int | None, device: str) -> int:
    """The lanes to plan for before the runner exists: `lanes` when given; for None, one per core available to
    this process on a CPU (at most AUTO_MAX_LANES), 1 on a GPU."""
    if lanes is not None:
        return lanes
    if device != "cpu":
        return 1
    return max(1, min(AUTO_MAX_LANES, _cores()))


def lane_threads(lanes: int) -> int | None:
    """Intra-op threads per model call when there are `lanes`: the cores shared between them; None (the runtime's
    own choice) for one lane. A runner may let its user's explicit setting win (onnxruntime: $C4U_ORT_THREADS)."""
    if lanes == 1:
        return None
    return max(1, _cores() // lanes)


def lone_threads(lanes: int | None, planned: int) -> int | None:
    """Threads for a model call that runs alone (at most one lane has requests): every core when the lanes are the
    engine's own choice (lanes=None) and several, so a lone request is not held to one lane's share; None (each call
    on its lane's threads) when the user chose the lanes."""
    return _cores() if lanes is None and planned > 1 else None


def resolve_lanes(lanes: int | None, planned: int, runner, built_here: bool) -> int:
    """The lanes the engine runs: `lanes` as asked (refused where the runner serializes its calls); for None the
    planned count where the runner runs calls side by side on a CPU and was built here for it, else 1."""
    concurrent = runner.capabilities.concurrent_calls
    if lanes is None:
        return planned if built_here and concurrent and runner.device == "cpu" else 1
    if lanes > 1 and not concurrent:
        raise InvalidInputError(f"lanes={lanes} needs a runner whose calls may run at the same time (onnxruntime); "
                                f"the {runner.name} runner serializes its calls, so more lanes would only queue")
    return lanes


def _cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's share), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
