"""Offline selection: `c4u batch` (Engine.select_many underneath) against a loop of `select()` on the same engine.

    python benchmarks/bench_batch.py [--groups 2000] [--reason-groups 2000] [--chunk 100] [--size 224]

Workload: groups of 8 creatives made with `python -m c4u_engine.data make` (its groups.jsonl, each group its own
product and user), the built-in model with default settings. The groups are cut into chunks; every chunk runs both
ways in one process, as interleaved pairs (A then B, then B then A on the next chunk), caches cleared before each
run: (A) a loop of `engine.select()` over the chunk, (B) `run_batch` (what `c4u batch` runs) over the chunk's JSONL
into a results file. Reports selections/s of each, the ratio per mode (total time, and the median of the per-chunk
ratios), and checks that the results are equal (rankings identical, every comparison's P(A) within 1e-5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, markdown_table  # noqa: E402

P_TOLERANCE = 1e-5


def make_groups(root: Path, n: int, size: int, seed: int) -> Path:
    from c4u_engine.data.pairs import make_dataset

    data = root / f"groups-{n}-{size}-{seed}"
    if not (data / "groups.jsonl").is_file():
        make_dataset(data, 2, seed, size, n_groups=n, group_size=8, overwrite=True)
    return data / "groups.jsonl"


def loop(engine, records: list[dict], root: Path, mode: str) -> dict[str, dict]:
    out = {}
    for r in records:
        sel = engine.select([str(root / p) for p in r["images"]], {"title": r["product_title"], "queries": r["query"]},
                            mode=mode)
        out[r["id"]] = sel.to_dict()
    return out


def batch(engine, records: list[dict], root: Path, mode: str, work: Path) -> dict[str, dict]:
    from c4u_engine.batch.run import run_batch

    source, out = work / "chunk.jsonl", work / "out.jsonl"
    source.write_text("".join(json.dumps({**r, "images": [str(root / p) for p in r["images"]]}) + "\n"
                              for r in records))
    out.unlink(missing_ok=True)
    summary = run_batch(engine, source, out, options={"mode": mode}, progress=False)
    if summary.failed:
        raise SystemExit(f"c4u batch failed {summary.failed} items")
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def compare(a: dict[str, dict], b: dict[str, dict]) -> tuple[int, float]:
    """(groups with equal rankings, max |dP(A)| over all comparisons)."""
    same, worst = 0, 0.0
    for key, x in a.items():
        y = b[key]
        same += x["ranking"] == y["ranking"]
        pa = {(c["first"], c["second"]): c["prob_a"] for c in y["comparisons"]}
        for c in x["comparisons"]:
            other = pa.get((c["first"], c["second"]))
            worst = max(worst, float("inf") if other is None else abs(c["prob_a"] - other))
    return same, worst


def run_mode(engine, records, root, mode, chunk, work) -> dict:
    times = {"loop": 0.0, "batch": 0.0}
    ratios, same, worst = [], 0, 0.0
    for k in range(0, len(records), chunk):
        part = records[k:k + chunk]
        order = ("loop", "batch") if (k // chunk) % 2 == 0 else ("batch", "loop")
        got, took = {}, {}
        for name in order:
            engine.clear_caches()
            t0 = time.perf_counter()
            got[name] = loop(engine, part, root, mode) if name == "loop" else batch(engine, part, root, mode, work)
            took[name] = time.perf_counter() - t0
            times[name] += took[name]
        ratios.append(took["loop"] / took["batch"])
        s, w = compare(got["loop"], got["batch"])
        same, worst = same + s, max(worst, w)
        rates = {name: len(part) / took[name] for name in took}
        print(f"{mode} chunk {k // chunk}: loop {rates['loop']:.2f}/s, batch {rates['batch']:.2f}/s, ratio "
              f"{ratios[-1]:.2f}", file=sys.stderr, flush=True)
    n = len(records)
    return {"mode": mode, "groups": n, "loop_per_s": n / times["loop"], "batch_per_s": n / times["batch"],
            "ratio": times["loop"] / times["batch"], "median_chunk_ratio": statistics.median(ratios),
            "equal_rankings": same, "max_dp": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=2000, help="groups for fast mode")
    ap.add_argument("--reason-groups", type=int, default=2000, help="groups for reason mode (0: skip)")
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    from c4u_engine.api import default_engine

    root = Path(tempfile.gettempdir()) / "c4u-bench-batch"
    source = make_groups(root, max(args.groups, args.reason_groups), args.size, args.seed)
    records = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    engine = default_engine()
    engine.select([str(source.parent / p) for p in records[0]["images"]], records[0]["product_title"])  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for mode, n in (("fast", args.groups), ("reason", args.reason_groups)):
            if n:
                rows.append(run_mode(engine, records[:n], source.parent, mode, args.chunk, Path(work)))
    print(f"machine: {machine()}; engine: {engine.backend}, {engine.precision}, lanes {engine.core.config.lanes}; "
          f"default window {engine.default_in_flight}")
    print(markdown_table(
        ["mode", "groups", "loop of select() /s", "c4u batch /s", "ratio (total)", "median chunk ratio",
         "equal rankings", "max abs dP(A)"],
        [[r["mode"], r["groups"], f"{r['loop_per_s']:.2f}", f"{r['batch_per_s']:.2f}", f"{r['ratio']:.2f}",
          f"{r['median_chunk_ratio']:.2f}", f"{r['equal_rankings']}/{r['groups']}", f"{r['max_dp']:.1e}"]
         for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["equal_rankings"] != r["groups"] or r["max_dp"] > P_TOLERANCE]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
