"""Batched sampling on CPU: the CPU twin (ops.sampling, one native call) against the engine's numpy Sampler, per
step of a decode batch, plus the CUDA source under the SIMT emulator (what CI pays). Run:
    python benchmarks/bench_sampling.py [--rows 16] [--vocab 151936] [--reps 10]
Prints the machine and a markdown table of medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.ops.dispatch import emulated_why_not
from c4u_engine.ops.sampling import sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    logits = np.random.default_rng(0).standard_normal((a.rows, a.vocab)).astype(np.float32) * 4
    cases = [("argmax", dict(), SamplingParams()),
             ("T=0.7, top-k 50, top-p 0.9", dict(temperature=0.7, top_k=50, top_p=0.9),
              SamplingParams(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, seed=0))]
    rows = []
    for name, kwargs, params in cases:
        t_numpy = report.median_seconds(lambda: Sampler(params)(logits), a.reps)
        t_twin = report.median_seconds(lambda: sample(logits, seed=1, offsets=np.arange(a.rows), **kwargs), a.reps)
        row = [name, f"{t_numpy * 1e3:.1f}", f"{t_twin * 1e3:.1f}", f"{t_numpy / t_twin:.1f}x"]
        if emulated_why_not() is None:
            t_emu = report.median_seconds(lambda: sample(logits, seed=1, device="emulated", **kwargs), 1)
            row.append(f"{t_emu * 1e3:.0f}")
        rows.append(row)
    print(f"machine: {report.machine()}")
    print(f"{a.rows} rows x vocab {a.vocab}, float32 logits")
    print(report.markdown_table(["rule", "numpy Sampler ms", "CPU twin ms", "speedup", "emulated CUDA source ms"],
                                rows))


if __name__ == "__main__":
    main()
