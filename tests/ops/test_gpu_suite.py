"""benchmarks/gpu_suite.sh as far as a CPU allows: --dry-run lists every GPU step with its time limit and runs the
CPU-side ones for real (the benchmarks' argument handling and tiny CPU cases, the end-to-end one included, and the
cascade op tests)."""

from __future__ import annotations

import json
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
    assert "| embed_merge |" in text and "| mrope positions |" in text
    assert "-> end-to-end tiny CPU run: exit 0" in text and "-> end-to-end bad argument rejected (exit 2)" in text
    # the end-to-end benchmark's tiny run: every mode x strategy, both engines, agreeing with transformers
    rows = json.loads((tmp_path / "end_to_end_tiny.json").read_text())["rows"]
    assert sorted((r["mode"], r["strategy"]) for r in rows) == [("fast", "knockout"), ("fast", "round_robin"),
                                                                 ("reason", "knockout"), ("reason", "round_robin")]
    for r in rows:
        assert r["kernels"]["same_answers_as_default"] is True and r["default"]["seconds"] > 0
        # the two engines share the weights, not the attention: only the kernels engine runs the kernels
        assert r["kernels"]["kernels_active"] is True and r["default"]["kernels_active"] is False
        if r["mode"] == "fast":
            assert r["transformers"]["max_prob_a_diff"] < 1e-4
        else:
            same, measured = r["transformers"]["same_text"].split("/")
            assert same == measured == str(r["transformers"]["measured_comparisons"])
            assert r["default"]["tokens_decoded"] > 0
    for step in ("build with CUDA required", "bench_kernels.py --device cuda", "cuda-marked tests", "--tool memcheck", "--tool racecheck",
                 "bench_cascade_attention.py --device cuda --dtype bfloat16 --groups 8,16 --rows-per-group 1,2,4,8,16",
                 "bench_gpu_end_to_end.py --device cuda --n 8 --image-side 448 --max-new-tokens 64"):
        assert step in text
    limits = [int(line.rsplit("(limit ", 1)[1].rstrip("s)")) for line in text.splitlines() if "(limit " in line]
    assert len(limits) == 8 and sum(limits) <= 8 * 60


def test_bad_option_rejected():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--bogus"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
