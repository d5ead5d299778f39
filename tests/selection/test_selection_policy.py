"""Selection policies against a synthetic judge: rounds and modes, the hybrid policy, input-index remapping."""

from __future__ import annotations

import dataclasses

import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.policy import MODES, STRATEGY_NAMES, PairPolicy, SelectionPolicy


def drive(policy, judge_fast, judge_reason):
    rounds = []
    while (nxt := policy.pending_round()) is not None:
        pairs, mode = nxt
        rounds.append((list(pairs), mode))
        policy.record((judge_fast if mode == "fast" else judge_reason)(pairs))
    return rounds


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_one_judge_mode_runs_the_tournament_in_that_mode(synthetic_judge, strategy):
    judge = synthetic_judge([0.1, 2.0, -1.0, 0.5, 1.0])
    for mode in ("fast", "reason"):
        policy = SelectionPolicy(5, strategy, True, mode)
        rounds = drive(policy, judge, judge)
        assert {m for _, m in rounds} == {mode}
        sel = policy.selection(list(range(5)))
        assert sel.winner == 1 and sel.stats["mode"] == mode and "hybrid_reasoned" not in sel.stats


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_hybrid_reasons_about_exactly_the_deciding_pairs(synthetic_judge, strategy):
    fast = synthetic_judge([0.1, 2.0, -1.0, 0.5, 1.0])
    # the reasoning judge disagrees with the fast one on which of 1 and 4 is better
    reason = synthetic_judge([0.1, 1.0, -1.0, 0.5, 2.0], reasoning="because")
    policy = SelectionPolicy(5, strategy, True, "hybrid")
    rounds = drive(policy, fast, reason)
    assert [m for _, m in rounds][:-1] == ["fast"] * (len(rounds) - 1) and rounds[-1][1] == "reason"
    sel = policy.selection([10, 11, 12, 13, 14])
    deciding = policy.tournament.deciding_pairs()
    assert sorted(rounds[-1][0]) == sorted(deciding)
    reasoned = [c for c in sel.comparisons if c.mode == "reason"]
    assert sorted((c.first, c.second) for c in reasoned) == sorted((10 + a, 10 + b) for a, b in deciding)
    assert sel.stats["hybrid_reasoned"] == len(deciding)
    flipped = sum(1 for a, b in deciding if {a, b} == {1, 4})
    assert sel.stats["hybrid_disagreements"] == flipped and sel.winner == 11  # the fast tournament's winner
    assert sel.explanation and "because" in sel.explanation


def test_selection_maps_to_input_indices_with_duplicates_beside_their_original(synthetic_judge):
    judge = synthetic_judge([0.0, 1.0, 2.0])
    policy = SelectionPolicy(3, "round_robin", True, "fast")
    drive(policy, judge, judge)
    sel = policy.selection([0, 2, 5], duplicates={3: 2, 4: 0}, rejected={1: "unreadable"})
    assert sel.ranking == [5, 2, 3, 0, 4] and sel.winner == 5
    assert sel.scores[3] == sel.scores[2] and sel.scores[4] == sel.scores[0]
    assert sel.rejected == {1: "unreadable"} and sel.duplicates == {3: 2, 4: 0}
    assert {(c.first, c.second) for c in sel.comparisons} <= {(a, b) for a in (0, 2, 5) for b in (0, 2, 5) if a != b}


def test_a_reasoning_round_with_other_pairs_is_refused(synthetic_judge):
    judge = synthetic_judge([0.0, 1.0, 2.0])
    policy = SelectionPolicy(3, "knockout", True, "hybrid")
    while (nxt := policy.pending_round())[1] == "fast":
        policy.record(judge(nxt[0]))
    wrong = [dataclasses.replace(c, first=c.second, second=c.first) for c in judge(nxt[0][:1])]
    with pytest.raises(InvalidInputError, match="reasoning round"):
        policy.record(wrong)


def test_pair_policy_is_one_round():
    policy = PairPolicy("reason")
    assert policy.pending_round() == ([(0, 1)], "reason")
    with pytest.raises(InvalidInputError, match="fast, reason"):
        PairPolicy("hybrid")


def test_modes_and_strategies_are_named_once():
    from c4u_engine.cli import build_parser

    assert MODES == ("fast", "reason", "hybrid") and STRATEGY_NAMES == ("knockout", "round_robin")
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["select"]
    choices = {a.dest: a.choices for a in sub._actions}
    assert tuple(choices["mode"]) == MODES and tuple(choices["strategy"]) == STRATEGY_NAMES
    with pytest.raises(InvalidInputError, match="knockout, round_robin"):
        SelectionPolicy(3, "swiss")
