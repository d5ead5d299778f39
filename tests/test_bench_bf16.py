"""benchmarks/bench_bf16.py's own logic, without a model: how two selections' agreement is counted, the paired
ratio, and that its session-option wrapper really reaches the options onnxruntime sessions are made with (the
fastmath row of BENCHMARKS.md depends on it) and is undone afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_bf16  # noqa: E402

from c4u_engine.comparison import Comparison  # noqa: E402
from c4u_engine.selection.results import Selection  # noqa: E402


def selection(probs: dict[tuple[int, int], float], ranking: list[int], texts: bool = False) -> Selection:
    comparisons = [Comparison(i, j, "A" if p >= 0.5 else "B", p, raw_text=f"{i}{j}{p >= 0.5}" if texts else None)
                   for (i, j), p in probs.items()]
    return Selection(winner=ranking[0], ranking=ranking, scores={i: 0.5 for i in ranking}, comparisons=comparisons)


def test_agreement_round_robin_counts_drift_answers_and_winner():
    ref = selection({(0, 1): 0.90, (1, 0): 0.20, (0, 2): 0.55, (2, 0): 0.30}, [0, 1, 2])
    ours = selection({(1, 0): 0.25, (0, 1): 0.875, (2, 0): 0.30, (0, 2): 0.45}, [0, 2, 1])  # other order, one flip
    got = bench_bf16.agreement(ours, ref)
    assert got["max_dp"] == pytest.approx(0.10)
    assert (got["same_answers"], got["comparisons"], got["unmatched"]) == (3, 4, 0)
    assert got["same_winner"] and not got["same_ranking"]
    assert "same_text" not in got


def test_agreement_knockout_with_other_pairs_and_texts():
    ref = selection({(0, 1): 0.9, (1, 0): 0.2, (0, 2): 0.6}, [0, 2, 1], texts=True)
    ours = selection({(0, 1): 0.4, (1, 0): 0.2, (1, 2): 0.7}, [1, 2, 0], texts=True)
    got = bench_bf16.agreement(ours, ref)
    assert (got["comparisons"], got["unmatched"], got["same_answers"], got["same_text"]) == (2, 2, 1, 1)
    assert got["max_dp"] == pytest.approx(0.5) and not got["same_winner"]
    assert bench_bf16._agreement_cell(got) == "5.0e-01, 1/2, winner DIFFERS, same text 1/2, 2 pairs not in both"


def test_paired_ratio_is_the_median_of_per_repetition_ratios():
    assert bench_bf16.paired_ratio([4.0, 3.0, 10.0], [2.0, 3.0, 2.0]) == 2.0  # ratios 2, 1, 5
    assert bench_bf16.paired_ratio([1.0, 1.0], [2.0, 4.0]) == pytest.approx(0.375)


def test_session_config_reaches_the_runners_options_and_is_undone():
    ort = pytest.importorskip("onnxruntime")
    from c4u_engine.runners import onnxruntime_runner

    original = onnxruntime_runner._session_options
    with bench_bf16.session_config({bench_bf16.FASTMATH_KEY: "1"}):
        options = onnxruntime_runner._session_options(ort, None)
        assert options.get_session_config_entry(bench_bf16.FASTMATH_KEY) == "1"
    assert onnxruntime_runner._session_options is original
    with pytest.raises(RuntimeError, match=bench_bf16.FASTMATH_KEY):  # no entry once the wrapper is gone
        original(ort, None).get_session_config_entry(bench_bf16.FASTMATH_KEY)
