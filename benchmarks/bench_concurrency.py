"""Many requests at once: one Engine, the same selections run one at a time and by C concurrent client threads.

    python benchmarks/bench_concurrency.py --requests 48 --clients 1 4 8 16 --modes fast reason [--lanes 1 2]

Workload: `--requests` selections of `--candidates` creatives each, every one for its own product and user (its own
profile and its own creatives, drawn from the synthetic generator at 112x112: nothing is shared across requests, so
any gain is batching, not caching); knockout with both orders. Baseline: the same requests, one `select` after the
other, on the same engine, in the same run (with --lanes 1 2, also against the one-lane engine's). Caches are
cleared before every phase, so every phase starts cold.
Reports throughput (selections/s, and the ratio to one-at-a-time) and p50/p99 request latency per client count;
checks that every concurrent result equals the one-at-a-time result (rankings, P(A) within 1e-5).
Models: `builtin` (default; onnxruntime on CPU), `workload` (bench_select's ~40M checkpoint with random weights),
`tiny` (the test suite's tiny random checkpoint: per-call overhead dominates), or any checkpoint directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table  # noqa: E402


def model_dir(name: str) -> Path:
    import tempfile

    if name == "builtin":
        from c4u_engine.builtin import builtin_model_dir

        return Path(builtin_model_dir())
    if name in ("workload", "tiny"):
        import workload as bench_workload  # also puts tests/ on the path

        root = Path(tempfile.gettempdir()) / "c4u-bench-concurrency"
        if name == "workload":
            return bench_workload.checkpoint(root)
        from tiny_checkpoint import make_tiny_checkpoint

        path = root / "tiny"
        if not (path / "config.json").is_file():
            make_tiny_checkpoint(path)
        return path
    return Path(name)


def workload(n_requests: int, n_candidates: int, size: int, seed: int) -> list[tuple[list[np.ndarray], dict]]:
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_requests):
        group = sample_group(rng, n_candidates)
        images = [np.asarray(render(spec, size)) for spec in group.specs]
        out.append((images, {"title": group.product.title, "queries": list(group.profile.queries)}))
    return out


def run_phase(engine, requests, clients: int, options: dict) -> tuple[float, list[float], list]:
    """All requests through `clients` threads pulling from one list; returns (seconds, latencies, selections)."""
    engine.clear_caches()
    results: list = [None] * len(requests)
    latencies: list[float] = [0.0] * len(requests)
    next_index = iter(range(len(requests)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                k = next(next_index, None)
            if k is None:
                return
            images, profile = requests[k]
            t0 = time.perf_counter()
            try:
                results[k] = engine.select(images, profile, **options)
            except BaseException as exc:  # noqa: BLE001 - reported after the phase
                errors.append(exc)
                return
            latencies[k] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if clients == 0:  # one at a time, in this thread: the baseline
        client()
    else:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return seconds, latencies, results


def same(a, b) -> bool:
    return a.ranking == b.ranking and all(
        abs(x.prob_a - y.prob_a) <= 1e-5 and (x.first, x.second) == (y.first, y.second)
        for x, y in zip(a.comparisons, b.comparisons)) and len(a.comparisons) == len(b.comparisons)


def _lanes(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lanes: an int or auto, not {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin", help="builtin | workload | tiny | a checkpoint directory")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu", help="cpu | cuda (where a GPU is lent: the batching gain this issue "
                   "targets for fast mode is a GPU one)")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--reason-requests", type=int, default=16, help="requests in reason mode (decoding is long)")
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--modes", nargs="+", default=["fast", "reason"])
    p.add_argument("--strategy", default="knockout")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lanes", type=_lanes, nargs="+", default=["auto"], help="EngineConfig.lanes values (ints or "
                   "auto, the default: a lane per core for onnxruntime on a CPU), one engine each; the last column "
                   "compares with the first value's one-at-a-time run")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()

    from c4u_engine.api import Engine
    rows = []
    first_base: dict[str, float] = {}  # mode -> one-at-a-time seconds of the first --lanes value
    for lanes in args.lanes:
        engine = Engine(model_dir(args.model), backend=args.backend, device=args.device,
                        lanes=None if lanes == "auto" else lanes)
        lanes = f"{engine.config.lanes}" + (" (auto)" if lanes == "auto" else "")
        for mode in args.modes:
            n = args.requests if mode == "fast" else args.reason_requests
            requests = workload(n, args.candidates, args.size, args.seed)
            options = dict(mode=mode, strategy=args.strategy, max_new_tokens=args.max_new_tokens)
            run_phase(engine, requests, max(args.clients), options)  # warm-up: every batch shape the phases see
            run_phase(engine, requests[:4], 0, options)
            base_s, base_lat, base_sel = run_phase(engine, requests, 0, options)
            first_base.setdefault(mode, base_s)

            def row(clients, secs, lat, agree):
                rows.append(dict(lanes=lanes, mode=mode, clients=clients, requests=n, seconds=secs,
                                 throughput=n / secs, ratio=base_s / secs, ratio_first=first_base[mode] / secs,
                                 p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)),
                                 same_results=f"{agree}/{n}"))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

            row("one at a time", base_s, base_lat, n)
            for c in args.clients:
                secs, lat, sels = run_phase(engine, requests, c, options)
                row(c, secs, lat, sum(same(a, b) for a, b in zip(sels, base_sel)))
        engine.close()
    desc = (f"{args.model} model on {engine.backend}/{engine.device}, lanes {args.lanes}; "
            f"{args.candidates} candidates, "
            f"{args.strategy}, both orders, {args.size}x{args.size}; reason max_new_tokens={args.max_new_tokens}")
    where = machine()
    if args.device.startswith("cuda"):
        import torch

        where += f", {torch.cuda.get_device_name(torch.device(args.device))}"
    print(f"\nmachine: {where}\nworkload: {desc}\n")
    print(markdown_table(
        ["lanes", "mode", "clients", "requests", "seconds", "selections/s", "vs one at a time",
         f"vs lanes={args.lanes[0]} one at a time", "p50 latency s", "p99 latency s", "same results"],
        [[r["lanes"], r["mode"], r["clients"], r["requests"], f"{r['seconds']:.2f}", f"{r['throughput']:.2f}",
          f"{r['ratio']:.2f}x", f"{r['ratio_first']:.2f}x", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
          r["same_results"]] for r in rows]))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "workload": desc, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
