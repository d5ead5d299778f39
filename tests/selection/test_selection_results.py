"""Comparison and Selection: validation, derived properties, JSON round trips, summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import Comparison, Selection


def test_comparison_winner_and_evidence():
    a = Comparison(2, 5, "A", 0.8)
    b = Comparison(2, 5, "B", 0.1)
    bad = Comparison.unparsable(2, 5, mode="reason", raw_text="no tags here")
    assert (a.winner, b.winner, bad.winner) == (2, 5, None)
    assert (a.p_first, b.p_first, bad.p_first) == (0.8, 0.1, 0.5)
    assert bad.answer is None and not bad.parsed and bad.error == "unparsable answer: 'no tags here'"
    assert a.remap([10, 11, 12, 13, 14, 15]) == Comparison(12, 15, "A", 0.8)


def test_comparison_stores_plain_floats():
    c = Comparison(0, 1, "A", np.float32(0.75))
    assert type(c.prob_a) is float and json.dumps(c.to_dict())


@pytest.mark.parametrize("kwargs, match", [
    (dict(first=1, second=1, answer="A", prob_a=0.5), "two different"),
    (dict(first=-1, second=1, answer="A", prob_a=0.5), "non-negative"),
    (dict(first=True, second=1, answer="A", prob_a=0.5), "non-negative"),
    (dict(first=0, second=1, answer="a", prob_a=0.5), "'A', 'B' or None"),
    (dict(first=0, second=1, answer="A", prob_a=1.5), r"\[0, 1\]"),
    (dict(first=0, second=1, answer="A", prob_a=float("nan")), r"\[0, 1\]"),
    (dict(first=0, second=1, answer="A", prob_a="high"), "number"),
    (dict(first=0, second=1, answer="A", prob_a=0.5, mode=""), "mode"),
])
def test_comparison_validation(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Comparison(**kwargs)


def _selection() -> Selection:
    comps = [
        Comparison(0, 2, "B", 0.2, reasoning="The second has a clearer offer.", mode="reason"),
        Comparison(2, 0, "A", 0.9, reasoning="  Creative A fits the profile.  ", mode="reason"),
        Comparison(2, 4, "A", 0.7),
        Comparison.unparsable(4, 2, mode="fast", raw_text="?"),
    ]
    return Selection(winner=2, ranking=[2, 0, 4], scores={2: 0.8, 0: 0.15, 4: 0.4}, comparisons=comps,
                     rejected={1: "unreadable image"}, duplicates={3: 0},
                     stats={"inconsistent_orders": 1, "seconds": {"prefill": np.float64(0.25)}, "shape": (2, 3)},
                     deciding_pairs=[(0, 2), (2, 0)])


def test_selection_json_round_trip():
    sel = _selection()
    data = sel.to_dict()
    assert json.loads(json.dumps(data)) == data  # only JSON types, string keys
    assert data["scores"] == {"2": 0.8, "0": 0.15, "4": 0.4}
    assert data["stats"]["seconds"]["prefill"] == 0.25 and data["stats"]["shape"] == [2, 3]
    back = Selection.from_dict(json.loads(json.dumps(data)))
    assert back.winner == 2 and back.ranking == sel.ranking and back.scores == sel.scores
    assert back.comparisons == sel.comparisons and back.rejected == sel.rejected
    assert back.duplicates == sel.duplicates and back.deciding_pairs == sel.deciding_pairs
    with pytest.raises(InvalidInputError, match="'winner'"):
        Selection.from_dict({"ranking": [0]})


def test_explanation_quotes_the_deciding_reasoning():
    sel = _selection()
    assert [(c.first, c.second) for c in sel.deciding_comparisons] == [(0, 2), (2, 0)]
    text = sel.explanation
    assert "clearer offer" in text and "fits the profile." in text
    assert "[2 as A vs 0 as B: picked 2]" in text
    no_reasons = Selection(winner=0, ranking=[0, 1], scores={0: 0.6, 1: 0.4},
                           comparisons=[Comparison(0, 1, "A", 0.6)], deciding_pairs=[(0, 1)])
    assert no_reasons.explanation is None


def test_summary_is_readable():
    sel = _selection()
    text = str(sel)
    records = {i: sel.record(i) for i in sel.ranking}
    w, m = records[2]
    assert text.splitlines()[0] == f"winner: #2 (won {w} of {m}, mean P 0.80)"
    assert "opponents beaten of those met" in text.splitlines()[1]  # what the numbers are, said once
    assert [line.strip() for line in text.splitlines()[2:5]] == [
        f"{r}. #{i}: won {records[i][0]} of {records[i][1]}, mean P {sel.scores[i]:.2f}"
        for r, i in enumerate(sel.ranking, 1)]
    assert "#1: unreadable image" in text and "#3 = #0" in text
    assert "comparisons: 4, unparsable: 1, inconsistent orders: 1" in text
    named = sel.summary(names=[f"ad{i}.png" for i in range(5)])
    assert named.splitlines()[0].startswith("winner: ad2.png (#2) (won") and "ad3.png (#3) = ad0.png (#0)" in named


def test_a_record_counts_opponents_not_comparisons():
    # 0 met 1 in both orders and 2 once: two opponents; it beat 1 (both orders) and lost to 2
    comparisons = [Comparison(0, 1, "A", 0.9), Comparison(1, 0, "B", 0.8), Comparison(2, 0, "A", 0.7)]
    sel = Selection(winner=2, ranking=[2, 0, 1], scores={2: 0.7, 0: 0.5, 1: 0.15}, comparisons=comparisons)
    assert sel.record(0) == (1, 2) and sel.record(2) == (1, 1) and sel.record(1) == (0, 1)
    assert sel.score_label(0) == "won 1 of 2, mean P 0.50"
    assert sel.explanation is None and "mode=\"hybrid\"" in sel.explanation_hint
    assert "why: no explanation: fast mode" in sel.summary()


@pytest.mark.parametrize("kwargs, match", [
    (dict(winner=0, ranking=[], scores={}), "at least one"),
    (dict(winner=1, ranking=[0, 1], scores={0: 1.0, 1: 0.0}), "ranking\\[0\\]"),
    (dict(winner=0, ranking=[0, 0], scores={0: 1.0}), "repeats"),
    (dict(winner=0, ranking=[0, 1], scores={0: 1.0}), "no score"),
    (dict(winner=0, ranking=[0, 1], scores={0: 1.0, 1: 0.0}, rejected={1: "x"}), "rejected"),
    (dict(winner=0, ranking=[0, 1], scores={0: 1.0, 1: 0.0}, duplicates={2: 5}), "not ranked originals"),
    (dict(winner=0, ranking=[0, 1], scores={0: 1.0, 1: 0.0}, duplicates={0: 0}), "not ranked originals"),
])
def test_selection_validation(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Selection(**kwargs)


def test_duplicates_may_be_ranked_beside_their_original():
    sel = Selection(winner=0, ranking=[0, 2, 1], scores={0: 0.7, 2: 0.7, 1: 0.3}, duplicates={2: 0})
    assert "#2 = #0" in sel.summary()
