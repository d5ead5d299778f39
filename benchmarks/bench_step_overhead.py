"""The engine's own Python work per scheduler step, outside the model runtime: comparable across revisions where
wall time is not (this box's speed drifts 20-30% between processes; a change of the engine's step changes this).

    python benchmarks/bench_step_overhead.py --selections 5 [--out rows.json]
    python benchmarks/bench_revisions.py --base ../old --pairs 3 bench_step_overhead.py --selections 5

Lone reasoning selections on the built-in model (4 creatives, knockout, 64 new tokens: many steps with few rows, where
the step's overhead weighs most) run under cProfile on the lane's thread; reported per step: Python function calls
and seconds spent outside the runtime's session calls (profiled, so inflated alike for every revision).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from report import machine  # noqa: E402
from tiny_checkpoint import make_test_image  # noqa: E402

RUNTIME_CALLS = ("onnxruntime_pybind11_state.run",)  # the session's own compute


def lane_step(engine):
    """(object, attribute name) of the lane's step, wherever this revision keeps it."""
    core = getattr(engine, "core", None)
    if core is not None:
        return core.lanes[0].worker.scheduler, "step"
    return engine._lanes[0].scheduler, "step"  # before the engine core (8e8931b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--selections", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    from c4u_engine.api import Engine
    from c4u_engine.builtin import builtin_model_dir

    images = [make_test_image(112, 112, seed=s) for s in range(4)]
    profile = {"title": "Trail running shoes", "queries": ["running shoes sale"]}
    engine = Engine(builtin_model_dir(), lanes=1)
    engine.select(images, profile, mode="reason", max_new_tokens=64)  # warm-up
    owner, name = lane_step(engine)
    step, prof, steps = getattr(owner, name), cProfile.Profile(), [0]

    def profiled_step():
        steps[0] += 1
        prof.enable()
        try:
            return step()
        finally:
            prof.disable()

    setattr(owner, name, profiled_step)
    for _ in range(args.selections):
        engine.select(images, profile, mode="reason", max_new_tokens=64, use_cache=False)
    engine.close()
    stats = pstats.Stats(prof)
    runtime = sum(v[3] for k, v in stats.stats.items() if any(c in k[2] for c in RUNTIME_CALLS))
    row = {"mode": "reason", "steps": steps[0], "calls_per_step": stats.total_calls / steps[0],
           "overhead_us_per_step": (stats.total_tt - runtime) / steps[0] * 1e6,
           "runtime_us_per_step": runtime / steps[0] * 1e6}
    print(f"machine: {machine()}\n{json.dumps(row)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": [row]}, indent=2))


if __name__ == "__main__":
    main()
