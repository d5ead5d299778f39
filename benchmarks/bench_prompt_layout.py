"""How much prefix reuse each prompt layout allows: tokens the engine prefills per selection, against the tokens of
every comparison's full prompt (what a loop without reuse computes), for the "c4u" layout (protocol and profile
first) and the Creative4U paper's (protocol after the images).

    python benchmarks/bench_prompt_layout.py --n 4 8 --strategies knockout round_robin

Same checkpoint, images and profile for both layouts; each selection runs cold (use_cache=False: request-local
reuse only). Default model: the built-in one; the numbers are about compute, not accuracy (the built-in model was
trained on the "c4u" layout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint directory (default: the built-in model)")
    p.add_argument("--n", type=int, nargs="+", default=[4, 8])
    p.add_argument("--strategies", nargs="+", default=["knockout", "round_robin"])
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_concurrency import workload
    from report import machine

    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir
    from c4u_engine.engine.prompt import PROMPT_PRESETS

    model = args.model or builtin_model_dir()
    rows = []
    for preset in PROMPT_PRESETS:
        engine = Engine(model, prompt=preset)
        for n in args.n:
            (images, profile), = workload(1, n, args.size, seed=n)
            for strategy in args.strategies:
                engine.select(images, profile, strategy=strategy, use_cache=False)  # warm-up
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    sel = engine.select(images, profile, strategy=strategy, use_cache=False)
                    times.append(time.perf_counter() - t0)
                session = engine.core.session
                full = sum(len(session.tokenize(*engine.comparison_messages(images[c.first], images[c.second],
                                                                            profile)).ids)
                           for c in sel.comparisons)
                done = sel.stats["tokens_prefilled"]
                rows.append(dict(preset=preset, n=n, strategy=strategy, comparisons=len(sel.comparisons),
                                 tokens_prefilled=done, full_prompt_tokens=full, share_computed=done / full,
                                 seconds=float(np.median(times))))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        engine.close()
    print(f"\nmachine: {machine()}; model: {model}; median of {args.repeat} cold selections\n")
    print("| layout | N | strategy | comparisons | tokens prefilled | tokens of the full prompts | computed | "
          "median s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['n']} | {r['strategy']} | {r['comparisons']} | {r['tokens_prefilled']} "
              f"| {r['full_prompt_tokens']} | {100 * r['share_computed']:.0f}% | {r['seconds']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
