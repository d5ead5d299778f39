"""pytest-benchmark view of the selection benchmark (bench_select.py prints the full table):

    pytest benchmarks/test_bench_select.py --benchmark-group-by=param:mode

Times Engine.select and the transformers loop on the same N=4 round-robin workload, one group per mode, so
pytest-benchmark's table shows them side by side. Not part of the test suite (testpaths = tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

N = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from c4u_engine.api import Engine
    from c4u_engine.reproduce import TransformersJudge

    ckpt = workload.checkpoint(tmp_path_factory.mktemp("bench"))
    return Engine(ckpt, backend="torch"), TransformersJudge(ckpt), workload.images(N)


def _pairs():
    return [(i, j) for i in range(N) for j in range(N) if i != j]


@pytest.mark.parametrize("mode", ["fast", "reason"])
def test_engine_select(benchmark, setup, mode):
    engine, _, images = setup
    sel = benchmark.pedantic(engine.select, args=(images, workload.PROFILE),
                             kwargs=dict(mode=mode, strategy="round_robin", max_new_tokens=64, use_cache=False),
                             rounds=3, warmup_rounds=1)
    assert len(sel.comparisons) == N * (N - 1)


@pytest.mark.parametrize("mode", ["fast", "reason"])
def test_transformers_loop(benchmark, setup, mode):
    engine, judge, images = setup

    def loop():
        for i, j in _pairs():
            messages, prefix = engine.comparison_messages(images[i], images[j], workload.PROFILE, mode=mode)
            if mode == "fast":
                judge.next_logits(messages, prefix)
            else:
                judge.generate(messages, prefix, max_new_tokens=64)

    benchmark.pedantic(loop, rounds=1, warmup_rounds=0)
