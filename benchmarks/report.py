"""What every benchmark shares: the machine it ran on, its rows as a markdown table, and its timer."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median_seconds(fn: Callable[[], object], reps: int, *, cuda_events: Any = None) -> float:
    """Median wall time of `fn` over `reps` calls after one warm-up call. cuda_events: the torch module, to time
    each call with CUDA events on the current stream instead (device time, not host time)."""
    fn()  # warm-up
    times = []
    if cuda_events is not None:
        cuda_events.cuda.synchronize()
    for _ in range(reps):
        if cuda_events is not None:
            start = cuda_events.cuda.Event(enable_timing=True)
            end = cuda_events.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
