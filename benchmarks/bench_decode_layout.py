"""Decode batches on onnxruntime: each row's cache packed from slot 0 (runners/decode_kv.py; the default of engines
that claim batch invariance) against the engine's slot layout with folds (the other engines' default), reasoning
selections timed in pairs.

    python benchmarks/bench_decode_layout.py [--models builtin 40m] [--reps 7] [--strategy round_robin]

One engine per model (default settings, every selection cold: use_cache=False); each repetition runs one reason-mode
selection of N = 8 creatives with each layout, the order alternating; the ratio is the median of the per-repetition
ratios engine layout / packed (above 1: packed is faster). Reasoning budget: 256 tokens on the built-in model, 64 on
the 40M one (a random model writes to the limit). The two layouts must write the same texts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
import workload  # noqa: E402

BUDGET = {"builtin": 256, "40m": 64, "150m": 64}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["builtin", "40m"], choices=list(BUDGET))
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--strategy", default="round_robin", choices=["round_robin", "knockout"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--root", default=str(Path("/tmp") / "c4u-bench-lone"))
    args = p.parse_args()
    from c4u_engine.api import Engine
    from c4u_engine.runners.decode_kv import DecodeKV
    from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

    default = OnnxRuntimeRunner.kv_for_decode
    layouts = {"packed": lambda self, kv, mask: kv if isinstance(kv, DecodeKV) else DecodeKV.pack(kv.segments(), mask),
               "engine layout": lambda self, kv, mask: kv}
    rows = []
    for model in args.models:
        ckpt = workload.exported(model, args.root)
        if args.precision == "int8" and model != "builtin":
            raise SystemExit("--precision int8 runs the built-in model's shipped int8 engine only")
        engine = Engine(ckpt, precision=args.precision)
        size = 112 if model == "builtin" else workload.IMAGE_SIDE
        images = [workload.make_test_image(size, size, seed=i) for i in range(8)]
        options = dict(mode="reason", strategy=args.strategy, max_new_tokens=BUDGET[model], use_cache=False)
        seconds = {name: [] for name in layouts}
        texts = {}
        for rep in range(args.reps + 1):  # the first repetition warms up and is not counted
            for name in (list(layouts) if rep % 2 == 0 else list(layouts)[::-1]):
                OnnxRuntimeRunner.kv_for_decode = layouts[name]
                start = time.perf_counter()
                selection = engine.select(images, workload.PROFILE, **options)
                if rep:
                    seconds[name].append(time.perf_counter() - start)
                texts[name] = [c.raw_text for c in selection.comparisons]
        OnnxRuntimeRunner.kv_for_decode = default
        engine.close()
        new, old = np.array(seconds["packed"]), np.array(seconds["engine layout"])
        same = sum(a == b for a, b in zip(texts["packed"], texts["engine layout"]))
        rows.append([model, args.precision, args.strategy, BUDGET[model], f"{np.median(new):.3f}",
                     f"{np.median(old):.3f}", f"{np.median(old / new):.3f}",
                     f"{same}/{len(texts['packed'])}"])
    print(report.markdown_table(["model", "precision", "strategy", "reasoning tokens", "packed s", "engine layout s",
                                 "engine layout / packed (paired median)", "same texts"], rows))
    print(f"\nmachine: {report.machine()}; {args.reps} interleaved pairs after a warm-up, medians")


if __name__ == "__main__":
    main()
