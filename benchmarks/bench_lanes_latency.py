"""A lone request's latency with one lane and with the default lanes, interleaved in one process.

    python benchmarks/bench_lanes_latency.py [--reps 8]

Lanes (EngineConfig.lanes) give each scheduler fewer threads: more throughput under concurrent requests
(bench_concurrency.py), but a request alone runs on one lane's threads. This measures what that costs or saves one
request at a time: the built-in model (onnxruntime) loaded twice, lanes=1 and the default, the same requests
(bench_concurrency's workload) alternating between the two engines rep by rep, so drift of the machine's speed
falls on both. Medians of the per-request time per rep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concurrency import workload  # noqa: E402
from report import machine, markdown_table  # noqa: E402

CASES = (("fast", 4, 112, 12), ("reason", 4, 112, 3), ("fast", 8, 224, 6))  # mode, candidates, size, requests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    args = p.parse_args()

    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir

    one, default = Engine(builtin_model_dir(), lanes=1), Engine(builtin_model_dir())
    rows = []
    for mode, n, size, k in CASES:
        requests = workload(k, n, size, seed=1)
        options = dict(mode=mode, max_new_tokens=args.max_new_tokens, use_cache=False)
        times: dict[int, list[float]] = {0: [], 1: []}
        for engine in (one, default):
            engine.select(*requests[0], **options)  # warm-up
        for rep in range(args.reps):
            for key in ((0, 1) if rep % 2 == 0 else (1, 0)):
                engine = (one, default)[key]
                t0 = time.perf_counter()
                for images, profile in requests:
                    engine.select(images, profile, **options)
                times[key].append((time.perf_counter() - t0) / len(requests))
        a, b = statistics.median(times[0]), statistics.median(times[1])
        rows.append([mode, n, f"{size}x{size}", f"{a * 1e3:.1f}", f"{b * 1e3:.1f}", f"{b / a:.2f}"])
    print(f"machine: {machine()}; default lanes here: {default.config.lanes}; median of {args.reps} interleaved reps\n")
    print(markdown_table(["mode", "candidates", "size", "lanes=1 ms", f"default ({default.config.lanes}) ms",
                          "default / lanes=1"], rows))
    one.close()
    default.close()


if __name__ == "__main__":
    main()
