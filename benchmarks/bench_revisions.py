"""Two revisions of c4u_engine, one benchmark, interleaved: does a change keep the speed it had?

    python benchmarks/bench_revisions.py --base ../base-checkout --pairs 3 -- \
        bench_select.py --n 8 --strategies round_robin --backends onnxruntime

`--base` is a checkout of the older revision (its native modules built, e.g. copied from this one's build); the
head is this checkout. Each pair runs the benchmark script once per revision, in separate processes (two versions of
one package cannot share a process), alternating which goes first (ABBA), so slow drift of a shared machine falls on
both. Every row of the script's JSON (`--out`) is matched by its identifying fields, and for each numeric metric the
median of the paired ratios head / base is reported. Ratios of ratios (bench_select's speedup against the
transformers loop, bench_concurrency's gain over one at a time) compare like with like across the two processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table  # noqa: E402

HEAD = Path(__file__).resolve().parent.parent
METRICS = {"bench_select.py": ("engine_s", "speedup"), "bench_concurrency.py": ("seconds", "throughput", "ratio"),
           "bench_step_overhead.py": ("calls_per_step", "overhead_us_per_step", "runtime_us_per_step")}
IDENTITY = ("n", "mode", "strategy", "lanes", "clients")


def run_once(tree: Path, script: str, args: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / script), *args, "--out", str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["rows"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="checkout of the older revision")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--out", help="write the paired results as JSON here")
    p.add_argument("script", help="a benchmark in benchmarks/ that writes rows as JSON with --out")
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    base, script = Path(args.base).resolve(), args.script
    metrics = METRICS.get(script)
    if metrics is None:
        p.error(f"no metrics known for {script}; known: {sorted(METRICS)}")
    runs: dict[str, list[list[dict]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            order = [("base", base), ("head", HEAD)] if k % 2 == 0 else [("head", HEAD), ("base", base)]
            for name, tree in order:
                runs[name].append(run_once(tree, script, args.args, Path(tmp) / f"{name}-{k}.json"))
                print(f"pair {k + 1}/{args.pairs}: {name} done", file=sys.stderr, flush=True)
    table, out = [], []
    for i, row in enumerate(runs["head"][0]):
        ident = {f: row[f] for f in IDENTITY if f in row}
        entry = {**ident}
        for m in metrics:
            ratios = [h[i][m] / b[i][m] for h, b in zip(runs["head"], runs["base"])]
            entry[m] = {"median_ratio": statistics.median(ratios), "ratios": ratios,
                        "base": [b[i][m] for b in runs["base"]], "head": [h[i][m] for h in runs["head"]]}
        out.append(entry)
        table.append([", ".join(f"{k}={v}" for k, v in ident.items())]
                     + [f"{entry[m]['median_ratio']:.3f} ({', '.join(f'{r:.2f}' for r in entry[m]['ratios'])})"
                        for m in metrics])
    print(f"\nmachine: {machine()}\nbenchmark: {script} {' '.join(args.args)}; {args.pairs} interleaved pairs\n")
    print(markdown_table(["row", *(f"{m}: head / base, median (pairs)" for m in metrics)], table))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "script": script, "args": args.args,
                                              "rows": out}, indent=2))


if __name__ == "__main__":
    main()
