"""Does a request's answer depend on what it is batched with? Per precision on the built-in model.

    python benchmarks/bench_batch_invariance.py [--requests 24] [--n 4] [--mode reason --max-new-tokens 256]

Each request (N creatives of a synthetic group, round robin) runs once alone with every cache off, then all of
them submitted at once (Engine.submit) to one shared engine, whose scheduler merges their comparisons into batches.
Prints max |dP(A)| between the two and how many answers, reasoning texts, winners and rankings differ.
`--engine-layout-decode` decodes as before runners/decode_kv.py (each row's cache in the engine's slot layout, folded
and merged at batch-wide points), for the before / after comparison.
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
    parser.add_argument("--model", help="checkpoint directory with its engines beside it (onnx/, onnx-int8/, as "
                                        "bench_precision.py --work leaves them; default: the built-in model)")
    parser.add_argument("--size", type=int, default=112, help="creative side in pixels")
    parser.add_argument("--mode", default="fast", choices=["fast", "reason"])
    parser.add_argument("--max-new-tokens", type=int, default=256, help="reason mode's reasoning budget")
    parser.add_argument("--engine-layout-decode", action="store_true",
                        help="keep decode KVs in the engine's layout (the onnxruntime runner before decode_kv.py)")
    args = parser.parse_args()
    if args.engine_layout_decode:
        from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

        OnnxRuntimeRunner.kv_for_decode = lambda self, kv, mask: kv
    options = {"strategy": "round_robin", "mode": args.mode}
    if args.mode == "reason":
        options["max_new_tokens"] = args.max_new_tokens
    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir

    model = args.model or builtin_model_dir()
    reqs = [(images[: args.n], profile) for images, profile in synthetic_groups(args.requests, args.size, seed=77)]
    rows = []
    for precision in args.precisions.split(","):
        alone_engine = Engine(model, precision=precision, encoder_cache_bytes=0, prefix_cache_bytes=0)
        alone = [alone_engine.select(im, p, use_cache=False, **options) for im, p in reqs]
        shared = Engine(model, precision=precision)
        got = [f.result() for f in [shared.submit(im, p, **options) for im, p in reqs]]
        pairs = [(x, y) for g, r in zip(got, alone) for x, y in zip(g.comparisons, r.comparisons)]
        rows.append([precision, len(pairs), f"{max(abs(x.prob_a - y.prob_a) for x, y in pairs):.2e}",
                     sum(x.prob_a != y.prob_a for x, y in pairs), sum(x.answer != y.answer for x, y in pairs),
                     sum(x.raw_text != y.raw_text for x, y in pairs),
                     sum(g.winner != r.winner for g, r in zip(got, alone)),
                     sum(g.ranking != r.ranking for g, r in zip(got, alone))])
    print(report.markdown_table(["precision", "comparisons", "max |dP(A)| batched vs alone", "P(A) differ",
                                 "answers differ", "texts differ", "winners differ", "rankings differ"], rows))
    budget = f", up to {args.max_new_tokens} reasoning tokens" if args.mode == "reason" else ""
    layout = "; decode KVs in the engine's layout (before decode_kv.py)" if args.engine_layout_decode else ""
    print(f"\nmachine: {report.machine()}; {Path(model).name}; {args.requests} requests of {args.n} creatives of "
          f"{args.size} px, {args.mode} mode{budget}, "
          f"submitted at once{layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
