"""Tournament strategies (knockout, round robin) against a synthetic judge with hidden strengths."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import Comparison, Tournament, run_tournament

STRATEGIES = ["knockout", "round_robin"]


def _strengths(n: int, seed: int) -> list[float]:
    """Distinct strengths in a random order, so the strongest sits anywhere in the input."""
    values = [0.4 * k for k in range(n)]
    random.Random(seed).shuffle(values)
    return values


def _expected_comparisons(strategy: str, n: int, both_orders: bool) -> int:
    matches = n - 1 if strategy == "knockout" else n * (n - 1) // 2
    return 2 * matches if both_orders else matches


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("both_orders", [True, False])
def test_counts_rounds_and_permutations(synthetic_judge, strategy, both_orders):
    for n in range(1, 18):
        judge = synthetic_judge(_strengths(n, seed=n))
        out = run_tournament(n, judge, strategy=strategy, both_orders=both_orders)
        assert len(out.comparisons) == _expected_comparisons(strategy, n, both_orders), n
        assert out.stats["comparisons"] == len(out.comparisons)
        # one judge call per round, each with the whole round
        assert judge.batches == out.rounds
        expected_rounds = (math.ceil(math.log2(n)) if strategy == "knockout" else 1) if n > 1 else 0
        assert len(judge.batches) == out.stats["rounds"] == expected_rounds, n
        assert sorted(out.ranking) == list(range(n))
        assert set(out.scores) == set(range(n))
        assert all(0.0 <= s <= 1.0 for s in out.scores.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("both_orders", [True, False])
def test_finds_the_strongest_without_bias(synthetic_judge, strategy, both_orders):
    for n in range(2, 18):
        strengths = _strengths(n, seed=100 + n)
        out = run_tournament(n, synthetic_judge(strengths), strategy=strategy, both_orders=both_orders)
        assert out.winner == strengths.index(max(strengths)), (n, strengths)


def test_round_robin_ranks_by_strength(synthetic_judge):
    strengths = _strengths(9, seed=7)
    out = run_tournament(9, synthetic_judge(strengths), strategy="round_robin")
    assert out.ranking == sorted(range(9), key=lambda c: -strengths[c])
    # a transitive judge: the k-th ranked candidate wins exactly n-1-k pairs
    wins = out.matrix.wins()
    assert [wins[c] for c in out.ranking] == list(range(8, -1, -1))
    assert out.scores[out.winner] == max(out.scores.values())


def test_knockout_rounds_are_matches_in_both_orders(synthetic_judge):
    out = run_tournament(11, synthetic_judge(_strengths(11, seed=3)), strategy="knockout")
    for pairs in out.rounds:
        assert Counter(pairs) == Counter((b, a) for a, b in pairs)  # every (i, j) has its (j, i) in the same round
        players = [c for a, b in pairs for c in (a, b)]
        assert all(count == 2 for count in Counter(players).values())  # nobody plays two matches in one round


def test_knockout_byes_rotate():
    # 5 candidates: round 1 gives #4 a bye; round 2 must give the bye to someone else.
    t = Tournament(5, "knockout", both_orders=False)
    assert t.pending_round() == [(0, 1), (2, 3)]
    t.record([Comparison(0, 1, "A", 0.9), Comparison(2, 3, "A", 0.9)])
    assert t.pending_round() == [(0, 4)]  # #2 sits out: #4 already had a bye
    t.record([Comparison(0, 4, "B", 0.2)])
    assert t.pending_round() == [(2, 4)]
    t.record([Comparison(2, 4, "A", 0.6)])
    assert t.pending_round() == []
    ranking, scores, stats = t.result()
    # #2 won the final; #4 lost in round 3; #0 in round 2; #1 and #3 in round 1, equal mean prob -> by index
    assert ranking == [2, 4, 0, 1, 3]
    assert stats["byes"] == 2
    assert scores[2] == pytest.approx((0.9 + 0.6) / 2)
    assert scores[4] == pytest.approx((0.8 + 0.4) / 2)


def test_knockout_ranking_ties_by_mean_win_probability():
    t = Tournament(4, "knockout", both_orders=False)
    t.pending_round()
    t.record([Comparison(0, 1, "A", 0.9), Comparison(2, 3, "A", 0.55)])  # #3 lost closer than #1
    t.pending_round()
    t.record([Comparison(0, 2, "A", 0.7)])
    assert t.ranking() == [0, 2, 3, 1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_both_orders_cancel_position_bias(synthetic_judge, strategy):
    # The strongest is last, so in one-order play it is always "Creative B"; a bias toward A bigger than every
    # strength gap makes the one-order tournament crown #0. Both orders cancel the bias and find #3.
    strengths, bias = [0.0, 0.5, 1.0, 1.5], 3.0
    biased = run_tournament(4, synthetic_judge(strengths, bias=bias), strategy=strategy, both_orders=False)
    assert biased.winner == 0
    fair = run_tournament(4, synthetic_judge(strengths, bias=bias), strategy=strategy, both_orders=True)
    assert fair.winner == 3
    if strategy == "round_robin":
        assert fair.ranking == [3, 2, 1, 0]
    # every pair has a gap below the bias: both orders say "A", i.e. they disagree on the winner
    assert fair.stats["inconsistent_orders"] == len(fair.comparisons) // 2
    assert biased.stats["inconsistent_orders"] == 0  # one order cannot disagree with itself


def test_inconsistent_orders_counted_only_where_orders_disagree(synthetic_judge):
    # gaps: (0,1) = 1 < bias -> inconsistent; (0,2) = 5 and (1,2) = 4 > bias -> consistent
    out = run_tournament(3, synthetic_judge([0.0, 1.0, 5.0], bias=2.0), strategy="round_robin")
    assert out.stats["inconsistent_orders"] == 1
    pair = out.matrix.pair(0, 1)
    assert pair.inconsistent and pair.winner == 1  # settled by the averaged probability
    assert run_tournament(3, synthetic_judge([0.0, 1.0, 5.0]), strategy="round_robin").stats[
        "inconsistent_orders"] == 0


def test_unparsable_answer_counts_as_half(synthetic_judge):
    judge = synthetic_judge([0.0, 5.0], unparsable={(0, 1)})
    out = run_tournament(2, judge, strategy="knockout", both_orders=True)
    assert out.winner == 1  # the readable order decides
    assert out.stats["unparsable"] == 1
    assert out.matrix.prob(1, 0) == pytest.approx((0.5 + judge.prob_a(1, 0)) / 2)
    assert out.comparisons[0].error.startswith("unparsable answer")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_unparsable_is_a_tie_won_by_the_lower_index(synthetic_judge, strategy):
    pairs = {(a, b) for a in range(3) for b in range(3) if a != b}
    out = run_tournament(3, synthetic_judge([0.0, 1.0, 9.0], unparsable=pairs), strategy=strategy)
    assert out.winner == 0
    assert out.stats["unparsable"] == len(out.comparisons)
    assert out.stats["tied_pairs"] == out.stats["pairs"]
    assert all(s == 0.5 for c, s in out.scores.items())


def test_exact_tie_goes_to_lower_index():
    t = Tournament(2, "knockout", both_orders=True)
    pairs = t.pending_round()
    # P_A = 0.7 in both orders: averaged P(0 beats 1) = (0.7 + 1 - 0.7) / 2 = 0.5 up to float noise
    t.record([Comparison(a, b, "A", 0.7) for a, b in pairs])
    assert t.ranking() == [0, 1]
    assert t.stats()["tied_pairs"] == 1 and t.stats()["inconsistent_orders"] == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [None, 5])
def test_deterministic(synthetic_judge, strategy, seed):
    strengths = _strengths(13, seed=1)
    runs = [run_tournament(13, synthetic_judge(strengths, bias=0.7), strategy=strategy, both_orders=False, seed=seed)
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_seed_shuffles_the_bracket(synthetic_judge):
    strengths = _strengths(8, seed=2)
    plain = run_tournament(8, synthetic_judge(strengths), strategy="knockout")
    assert plain.rounds[0][::2] == [(0, 1), (2, 3), (4, 5), (6, 7)]  # input-order seeding
    seeded = [run_tournament(8, synthetic_judge(strengths), strategy="knockout", seed=s) for s in range(3)]
    assert any(o.rounds[0] != plain.rounds[0] for o in seeded)
    assert all(o.winner == plain.winner for o in seeded)


def test_knockout_deciding_pairs_are_the_winners_matches(synthetic_judge):
    strengths = _strengths(8, seed=4)
    t = Tournament(8, "knockout", both_orders=True)
    judge = synthetic_judge(strengths)
    while pairs := t.pending_round():
        t.record(judge(pairs))
    winner = t.ranking()[0]
    matches = t.deciding_matches()
    assert len(matches) == 3 and all(w == winner for w, _ in matches)
    # one match per round, against the opponent the winner met in that round
    for (w, opponent), pairs in zip(matches, t.rounds):
        assert (w, opponent) in pairs and (opponent, w) in pairs
    assert t.deciding_pairs() == [p for w, o in matches for p in ((w, o), (o, w)) if p in set(sum(t.rounds, []))]
    assert len(t.deciding_pairs()) == 6


def test_round_robin_deciding_pairs_are_winner_vs_contenders(synthetic_judge):
    strengths = [0.0, 3.0, 1.0, 2.0, 0.5]  # ranking 1, 3, 2, 4, 0
    out = run_tournament(5, synthetic_judge(strengths), strategy="round_robin", both_orders=True)
    # wins: #1 4, #3 3, #2 2: flipping (1, 3) or (1, 2) would bring them level with #1; #4 (1 win) could not
    assert out.deciding_pairs == [(1, 3), (3, 1), (1, 2), (2, 1)]
    one = run_tournament(5, synthetic_judge(strengths), strategy="round_robin", both_orders=False)
    assert one.deciding_pairs == [(1, 3), (1, 2)]  # only the order that was judged (lower index as A)


def test_round_robin_runner_up_always_decides():
    # #0 beats everyone (5 wins); #1..#5 form a regular tournament (k beats k+1 and k+2, cyclically: 2 wins each),
    # so no single flipped match brings anyone level with #0: the runner-up alone is reported.
    beats = {(0, k) for k in range(1, 6)} | {(1 + k, 1 + (k + d) % 5) for k in range(5) for d in (1, 2)}
    t = Tournament(6, "round_robin", both_orders=False)
    t.record([Comparison(a, b, "A", 0.8) if (a, b) in beats else Comparison(a, b, "B", 0.3)
              for a, b in t.pending_round()])
    assert t.ranking()[0] == 0
    assert t.deciding_matches() == [(0, t.ranking()[1])]


def test_single_candidate_needs_no_comparison(synthetic_judge):
    for strategy in STRATEGIES:
        judge = synthetic_judge([1.0])
        out = run_tournament(1, judge, strategy=strategy)
        assert judge.batches == [] and out.comparisons == []
        assert out.ranking == [0] and out.scores == {0: 1.0} and out.deciding_pairs == []


@pytest.mark.parametrize("n", [0, -1, True, 2.0])
def test_bad_candidate_counts_raise(n):
    with pytest.raises(InvalidInputError):
        Tournament(n)


def test_protocol_errors():
    with pytest.raises(InvalidInputError, match="valid strategies"):
        Tournament(3, "swiss")
    t = Tournament(3, "round_robin", both_orders=False)
    with pytest.raises(InvalidInputError, match="no round pending"):
        t.record([])
    pairs = t.pending_round()
    assert t.pending_round() == pairs  # asking again before record() gives the same round
    with pytest.raises(InvalidInputError, match="not finished"):
        t.result()
    with pytest.raises(InvalidInputError, match=r"missing \[\(1, 2\)\]"):
        t.record([Comparison(0, 1, "A", 0.6), Comparison(0, 2, "A", 0.6)])
    with pytest.raises(InvalidInputError, match=r"unexpected \[\(2, 1\)\]"):
        t.record([Comparison(0, 1, "A", 0.6), Comparison(0, 2, "A", 0.6), Comparison(2, 1, "A", 0.6)])
    # results in any order are accepted
    t.record([Comparison(1, 2, "A", 0.6), Comparison(0, 2, "A", 0.6), Comparison(0, 1, "A", 0.6)])
    assert t.done and t.pending_round() == []
    assert t.ranking() == [0, 1, 2]


def test_to_selection_maps_to_input_indices(synthetic_judge):
    # inputs 0..4; #1 was rejected and #3 duplicates #0, so the tournament runs over inputs [0, 2, 4]
    strengths = [0.0, 2.0, 1.0]
    out = run_tournament(3, synthetic_judge(strengths, reasoning="B looks better"), strategy="knockout")
    sel = out.to_selection([0, 2, 4], rejected={1: "unreadable"}, duplicates={3: 0}, stats={"images_encoded": 3})
    assert sel.winner == 2 and sorted(sel.ranking) == [0, 2, 4]
    assert set(sel.scores) == {0, 2, 4}
    assert {(c.first, c.second) for c in sel.comparisons} <= {(a, b) for a in (0, 2, 4) for b in (0, 2, 4)}
    assert all(2 in pair for pair in sel.deciding_pairs)
    assert sel.stats["images_encoded"] == 3 and sel.stats["strategy"] == "knockout"
    assert "B looks better" in sel.explanation
    with pytest.raises(InvalidInputError, match="3 candidates"):
        out.to_selection([0, 2])


def test_tournament_selection_is_in_candidate_ids(synthetic_judge):
    t = Tournament(4, "knockout", both_orders=True)
    judge = synthetic_judge([0.0, 1.0, 3.0, 2.0])
    while pairs := t.pending_round():
        t.record(judge(pairs))
    sel = t.selection()
    assert sel.winner == 2 and sel.ranking == t.ranking() and sel.comparisons == t.comparisons
    assert sel.deciding_pairs == t.deciding_pairs() and sel.stats == t.stats()
