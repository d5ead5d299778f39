"""Does a request's answer depend on what it is batched with? Per precision on the built-in model.

    python benchmarks/bench_batch_invariance.py [--requests 24] [--n 4]

Each request (N creatives of a synthetic group, round robin, fast) runs once alone with every cache off, then all of
them submitted at once (Engine.submit) to one shared engine, whose scheduler merges their comparisons into batches.
Prints max |dP(A)| between the two and how many answers, winners and rankings differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(ROOT))
import report  # noqa: E402
from bench_precision import synthetic_groups  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--n", type=int, default=4, help="creatives per request (small: requests share batches)")
    parser.add_argument("--precisions", default="fp32,int8")
    args = parser.parse_args()
    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir

    reqs = [(images[: args.n], profile) for images, profile in synthetic_groups(args.requests, 112, seed=77)]
    rows = []
    for precision in args.precisions.split(","):
        alone_engine = Engine(builtin_model_dir(), precision=precision, encoder_cache_bytes=0, prefix_cache_bytes=0)
        alone = [alone_engine.select(im, p, strategy="round_robin", use_cache=False) for im, p in reqs]
        shared = Engine(builtin_model_dir(), precision=precision)
        got = [f.result() for f in [shared.submit(im, p, strategy="round_robin") for im, p in reqs]]
        pairs = [(x, y) for g, r in zip(got, alone) for x, y in zip(g.comparisons, r.comparisons)]
        rows.append([precision, len(pairs), f"{max(abs(x.prob_a - y.prob_a) for x, y in pairs):.2e}",
                     sum(x.answer != y.answer for x, y in pairs), sum(g.winner != r.winner for g, r in zip(got, alone)),
                     sum(g.ranking != r.ranking for g, r in zip(got, alone))])
    print(report.markdown_table(["precision", "comparisons", "max |dP(A)| batched vs alone", "answers differ",
                                 "winners differ", "rankings differ"], rows))
    print(f"\nmachine: {report.machine()}; {args.requests} requests of {args.n} creatives, submitted at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
