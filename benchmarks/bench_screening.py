"""Screening's cost: an N = 8 knockout fast selection with and without usability screening, in the same run.

    python benchmarks/bench_screening.py [--n 8] [--reps 7] [--screen-model DIR] [--out results.json]

Both use the built-in judge and the same 8 images (synthetic usability renders, 224 px); screening runs the built-in
screener with a product cut-out (the full mode) and a threshold of 0.001 so that no candidate is screened out: the
judged work is identical and the difference is screening alone. Each request is cold (use_cache=False); the two
kinds alternate, and medians are reported with the ratio. Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--screen-model", help="a screening model directory (default: the built-in one)")
    ap.add_argument("--threads", type=int, default=0, help="the screener's onnxruntime threads (0: its choice)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir
    from c4u_engine.data.usability import sample
    from c4u_engine.screening import Screener

    screener = Screener(args.screen_model, threshold=0.001, threads=args.threads)
    engine = Engine(builtin_model_dir(), screen_model=screener)
    samples = [sample(123, i, label="available", size=args.size) for i in range(args.n)]
    images = [np.asarray(s.generated) for s in samples]
    product, profile = samples[0].product, {"title": samples[0].text, "queries": ["gift ideas"]}

    def run(screen: bool):
        t0 = time.perf_counter()
        sel = engine.select(images, profile, mode="fast", strategy="knockout", use_cache=False, screen=screen,
                            product_image=product if screen else None)
        return time.perf_counter() - t0, sel

    run(False), run(True)  # warm-up: sessions, allocator, the screener's graph
    plain, screened, stage, wait = [], [], [], []
    for _ in range(args.reps):
        t, a = run(False)
        plain.append(t)
        t, b = run(True)
        screened.append(t)
        stage.append(b.stats["seconds"]["screen"])
        wait.append(b.stats["seconds"]["screen_wait"])
        assert a.ranking == b.ranking and not b.rejected, "screening changed the judged work"
    row = {"n": args.n, "comparisons": len(a.comparisons), "select_s": statistics.median(plain),
           "select_with_screening_s": statistics.median(screened), "screen_stage_s": statistics.median(stage),
           "screen_wait_s": statistics.median(wait),
           "reps": args.reps, "backend": engine.backend, "machine": report.machine()}
    row["added"] = row["select_with_screening_s"] / row["select_s"] - 1
    row["stage_share"] = row["screen_stage_s"] / row["select_s"]
    print(f"machine: {row['machine']}; judge backend: {engine.backend}; screener threads: {args.threads}; median of "
          f"{args.reps} alternating runs\n")
    print(report.markdown_table(
        ["N", "comparisons", "select (s)", "select + screening (s)", "added", "screening stage (s)",
         "stage / select", "caller waited for it (s)"],
        [[row["n"], row["comparisons"], f"{row['select_s']:.3f}", f"{row['select_with_screening_s']:.3f}",
          f"{100 * row['added']:+.1f}%", f"{row['screen_stage_s']:.4f}", f"{100 * row['stage_share']:.1f}%",
          f"{row['screen_wait_s']:.4f}"]]))
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
