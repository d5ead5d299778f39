"""The default lanes against fixed ones, for a lone request and for 8 concurrent clients, at three model sizes.

    python benchmarks/bench_lone_default.py [--models builtin 40m 150m] [--reps 5] [--clients 8]
        [--strategy round_robin|knockout]

Engines (onnxruntime fp32, each loaded once per model): `lanes=1` (one scheduler, every core per call), `lanes=2`
(two one-thread lanes: the default before lone sessions), and the default (`Engine(model)`: one lane per core, and
while at most one lane has requests its calls get every core). Lone: one N = 8 fast selection (round robin: 56 ordered
comparisons; --strategy knockout: rounds of 4, 2 and 1 pairs, both orders, so much smaller calls) of 224 px
creatives at a time, the engines alternating rep by rep in one process (rotating order), so
drift of the machine's speed falls on all; medians. Clients: `--clients` threads at once, each with its own selection
(the same workload, other seeds), selections/s, best of --rounds interleaved rounds. Also the
resident memory each engine added at load (the lone sessions are a second copy of the weights). Results must agree:
every engine's lone selections equal lanes=1's (rankings, P(A) within 1e-5).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402  (also puts tests/ on the path)
from bench_concurrency import run_phase, same  # noqa: E402  (the clients loop and the agreement check)
from report import machine, markdown_table  # noqa: E402

ENGINES = (("lanes=1", {"lanes": 1}), ("lanes=2", {"lanes": 2}), ("default", {}))
OPTIONS = dict(mode="fast", strategy="round_robin", use_cache=False)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_model(name: str, root: Path, reps: int, clients: int, rounds: int) -> list[list[str]]:
    from c4u_engine.api import Engine

    path = workload.exported(name, root)
    engines, memory = {}, {}
    for label, settings in ENGINES:
        gc.collect()
        before = rss_mib()
        engines[label] = Engine(path, backend="onnxruntime", **settings)
        memory[label] = rss_mib() - before
    lone = (workload.images(8, seed=1), workload.PROFILE)
    batch = [(workload.images(8, seed=10 + i), {"title": f"product {i}", "queries": ["sale", f"item {i}"]})
             for i in range(clients)]
    reference = engines["lanes=1"].select(*lone, **OPTIONS)
    for engine in engines.values():
        assert same(engine.select(*lone, **OPTIONS), reference), "engines disagree"
    labels = [label for label, _ in ENGINES]
    lone_s: dict[str, list[float]] = {label: [] for label in labels}
    for rep in range(reps):
        for label in labels[rep % 3:] + labels[: rep % 3]:
            t0 = time.perf_counter()
            engines[label].select(*lone, **OPTIONS)
            lone_s[label].append(time.perf_counter() - t0)
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for rnd in range(rounds):
        for label in labels[rnd % 3:] + labels[: rnd % 3]:
            rates[label].append(len(batch) / run_phase(engines[label], batch, clients, OPTIONS)[0])
    fastest = min(statistics.median(v) for v in lone_s.values())
    rows = []
    for label in labels:
        lone_median = statistics.median(lone_s[label])
        rows.append([name, label, str(engines[label].config.lanes), f"{lone_median:.3f}",
                     f"{lone_median / fastest:.2f}", f"{max(rates[label]):.2f}" if rates[label] else "-",
                     f"{memory[label]:.0f}"])
    for engine in engines.values():
        engine.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["builtin", "40m", "150m"], choices=["builtin", "40m", "150m"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of `clients` selections at once")
    p.add_argument("--strategy", default="round_robin", choices=["round_robin", "knockout"],
                   help="the selections' strategy (knockout: smaller calls, 4 + 2 + 1 pairs per round)")
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "c4u-bench-lone"))
    args = p.parse_args()
    OPTIONS["strategy"] = args.strategy
    print(f"machine: {machine()}; lone: median of {args.reps} interleaved N = 8 {args.strategy} fast selections; "
          f"{args.clients} clients: best of {args.rounds} interleaved rounds of {args.clients} selections\n",
          flush=True)
    header = ["model", "engine", "lanes", "lone s", "lone vs fastest", f"{args.clients} clients sel/s",
              "RSS at load MiB"]
    for i, name in enumerate(args.models):  # one table per model as it finishes (a long run shows progress)
        table = markdown_table(header, bench_model(name, Path(args.root), args.reps, args.clients, args.rounds))
        print(table if i == 0 else "\n".join(table.splitlines()[2:]), flush=True)


if __name__ == "__main__":
    main()
