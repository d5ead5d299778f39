"""Screening's cost: an N = 8 knockout fast selection with and without usability screening, in the same run.

    python benchmarks/bench_screening.py [--n 8] [--reps 7] [--screen-model DIR] [--out results.json]

Both use the built-in judge and the same 8 images (synthetic usability renders of one product, 224 px); screening
runs the built-in screener with that product's cut-out (the full mode) and a threshold of 0.001 so that no candidate
is screened out: the judged work is identical and the difference is screening alone. Two phases: cold
(use_cache=False: nothing reused,
the worst case) and warm (caches on; every run is a new user shown the same product's creatives, the production
pattern: the judge reuses its image embeddings, screening its verdicts, since a verdict does not depend on the
user). The two kinds alternate; medians are reported with the ratio, and the median of the paired ratios. Prints a
markdown table with the machine.
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
    from c4u_engine.data.catalog import CATALOGUE
    from c4u_engine.data.usability import sample
    from c4u_engine.screening import Screener

    screener = Screener(args.screen_model, threshold=0.001, threads=args.threads)
    engine = Engine(builtin_model_dir(), screen_model=screener)
    # a generator's batch for one product: N usable renders of the same product and colour (the cut-out screening
    # compares each ad with is that product's)
    first = sample(123, 0, label="available", size=args.size)
    product = next(p for p in CATALOGUE if p.title == first.text.split(", ")[0])
    samples = [first] + [sample(123, i, label="available", size=args.size, product=product, hue=first.meta["hue"])
                         for i in range(1, args.n)]
    images = [np.asarray(s.generated) for s in samples]
    product, profile = samples[0].product, {"title": samples[0].text, "queries": ["gift ideas"]}

    def run(screen: bool, use_cache: bool, user: int):
        # a new user each time (their own queries): only what does not depend on the user can be reused
        who = {**profile, "queries": [f"gift ideas {user}"]}
        t0 = time.perf_counter()
        sel = engine.select(images, who, mode="fast", strategy="knockout", use_cache=use_cache, screen=screen,
                            product_image=product if screen else None)
        return time.perf_counter() - t0, sel

    rows = []
    users = iter(range(10**9))
    for caches in ("cold", "warm"):
        use_cache = caches == "warm"
        engine.clear_caches()
        run(False, use_cache, next(users)), run(True, use_cache, next(users))  # warm-up (and, warm, the caches)
        plain, screened, stage, wait, ratio = [], [], [], [], []
        for _ in range(args.reps):
            t, a = run(False, use_cache, next(users))
            plain.append(t)
            t, b = run(True, use_cache, next(users))
            screened.append(t)
            ratio.append(screened[-1] / plain[-1])
            stage.append(b.stats["seconds"]["screen"])
            wait.append(b.stats["seconds"]["screen_wait"])
            # two users, so their rankings may differ; the judged work is the same: every candidate, as many pairs
            assert len(a.comparisons) == len(b.comparisons) and not b.rejected, "screening changed the judged work"
        rows.append({"caches": caches, "n": args.n, "comparisons": len(a.comparisons),
                     "select_s": statistics.median(plain), "select_with_screening_s": statistics.median(screened),
                     "added": statistics.median(screened) / statistics.median(plain) - 1,
                     "added_paired": statistics.median(ratio) - 1, "screen_stage_s": statistics.median(stage),
                     "screen_wait_s": statistics.median(wait), "cached_verdicts": b.stats["screening"]["cached"],
                     "reps": args.reps, "backend": engine.backend, "machine": report.machine()})
    print(f"machine: {report.machine()}; judge backend: {engine.backend}; screener threads: {args.threads}; median "
          f"of {args.reps} alternating runs; cold: use_cache=False; warm: caches on, the same creatives for a new "
          "user each run\n")
    print(report.markdown_table(
        ["caches", "N", "comparisons", "select (s)", "select + screening (s)", "added (medians)",
         "added (median of paired runs)", "screening stage (s)", "caller waited for it (s)", "verdicts cached"],
        [[r["caches"], r["n"], r["comparisons"], f"{r['select_s']:.4f}", f"{r['select_with_screening_s']:.4f}",
          f"{100 * r['added']:+.1f}%", f"{100 * r['added_paired']:+.1f}%", f"{r['screen_stage_s']:.4f}",
          f"{r['screen_wait_s']:.4f}", f"{r['cached_verdicts']}/{r['n']}"] for r in rows]))
    row = rows
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
