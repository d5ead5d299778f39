"""benchmarks/gpu_suite.sh as far as a CPU allows: --dry-run lists every GPU step with its time limit and runs the
CPU-side ones for real (the benchmark's argument handling and tiny CPU case, the cascade op tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_lists_the_gpu_steps_and_runs_the_cpu_ones(tmp_path):
    results = tmp_path / "results.txt"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "DRY RUN" in text
    assert "-> bad argument rejected (exit 2)" in text
    assert "-> cascade op tests on CPU twin + emulator: exit 0" in text
    assert "| 2 | 3 | 37 |" in text  # the benchmark's tiny case ran through both paths and agreed
    assert "| paged_kv.gather |" in text and "| sampling.sample argmax |" in text  # bench_kernels.py --small ran
    for step in ("build with CUDA required", "bench_kernels.py --device cuda", "cuda-marked tests", "--tool memcheck", "--tool racecheck",
                 "bench_cascade_attention.py --device cuda --dtype bfloat16 --groups 8,16 --rows-per-group 1,2,4,8,16"):
        assert step in text
    limits = [int(line.rsplit("(limit ", 1)[1].rstrip("s)")) for line in text.splitlines() if "(limit " in line]
    assert len(limits) == 7 and sum(limits) <= 8 * 60


def test_bad_option_rejected():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--bogus"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
