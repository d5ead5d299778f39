"""Vision call size: per-image encode time by the most patches one call may take.

    python benchmarks/bench_vision_groups.py [--models builtin workload] [--sizes 112 224]

The reference vision tower attends densely over a whole call (block-diagonal by mask), so its quadratic term grows
with the call; the runners cut calls by a patch budget (onnxruntime_runner.VISION_GROUP_PATCHES,
TorchRunner.vision_patches_per_call). 32 creatives from the synthetic generator, mean of 3 calls after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concurrency import model_dir, workload  # noqa: E402
from report import machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["builtin", "workload"])
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    args = p.parse_args()

    import c4u_engine.runners.onnxruntime_runner as ort_runner
    from c4u_engine.api import Engine
    from c4u_engine.ops.preprocess import preprocess

    print(f"machine: {machine()}\n\n| model | runtime | image | " + " | ".join(f"{b} patches" for b in args.budgets)
          + " |\n|---|---|---|" + "---|" * len(args.budgets))
    for name in args.models:
        engine = Engine(model_dir(name), backend="onnxruntime" if name == "builtin" else "torch")
        runner = engine.runner
        for size in args.sizes:
            images = [im for ims, _ in workload(8, 4, size, 0) for im in ims]
            pixels, grid = preprocess(images, engine.core.session.preprocess_params)
            cells = []
            for budget in args.budgets:
                if runner.name == "onnxruntime":
                    ort_runner.VISION_GROUP_PATCHES = budget
                else:
                    runner.vision_patches_per_call = budget
                runner.encode_images(pixels, grid)
                t0 = time.perf_counter()
                for _ in range(3):
                    runner.encode_images(pixels, grid)
                cells.append(f"{(time.perf_counter() - t0) / 3 / len(images) * 1e3:.2f} ms")
            print(f"| {name} | {runner.name} | {size}x{size} | " + " | ".join(cells) + " |")
        engine.close()


if __name__ == "__main__":
    main()
