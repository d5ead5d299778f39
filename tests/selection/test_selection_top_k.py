"""Top-k (a knockout until k remain, then a round robin among them) against synthetic and table judges."""

from __future__ import annotations

import random

import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import Comparison, Tournament, run_tournament
from c4u_engine.selection.policy import SelectionPolicy


def _random_table(n: int, seed: int) -> dict[tuple[int, int], float]:
    """Arbitrary (intransitive) P values: knockout luck and round robin order differ."""
    rng = random.Random(seed)
    return {(i, j): rng.choice([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]) for i in range(n) for j in range(i + 1, n)}


def _sub_judge(judge, ids: list[int]):
    """The same judge over candidates ids[0], ids[1], ... renamed 0, 1, ..."""
    return type(judge)({(a, b): judge.prob_a(ids[a], ids[b]) for a in range(len(ids)) for b in range(len(ids))
                        if a != b})


@pytest.mark.parametrize("orders", ["both", "one"])
def test_the_first_k_are_a_round_robin_among_the_finalists(table_judge, orders):
    for n in range(2, 14):
        for k in range(2, n + 1):
            judge = table_judge(_random_table(n, seed=100 * n + k))
            out = run_tournament(n, judge, strategy="knockout", top_k=k, orders=orders, finalists=k)
            finalists = sorted(out.ranking[:k])
            rr = run_tournament(k, _sub_judge(judge, finalists), strategy="round_robin", orders=orders)
            assert out.ranking[:k] == [finalists[c] for c in rr.ranking], (n, k)
            # the last round is every pair of the finalists; no finalist lost a knockout match
            assert {frozenset(p) for p in out.rounds[-1]} == {frozenset((a, b)) for a in finalists for b in finalists
                                                              if a < b} or k == 1
            matches = (n - k) + k * (k - 1) // 2
            assert len(out.comparisons) == (2 if orders == "both" else 1) * matches, (n, k)
            assert out.stats["top_k"] == k and out.stats["comparisons"] == len(out.comparisons)


def test_the_knockout_stops_at_k_and_its_last_round_plays_the_weakest_records(synthetic_judge):
    strengths = [0.0, 7.0, 1.0, 6.0, 2.0, 5.0, 3.0, 4.0]  # #1 > #3 > #5 > #7 > #6 > #4 > #2 > #0
    out = run_tournament(8, synthetic_judge(strengths), strategy="knockout", top_k=3, finalists=3)
    # round 1: the full first round. Round 2 must lose only one more: one match, between the two that beat their
    # opponents least convincingly (#5 and #7); #1 and #3 sit it out. Then the finalists' round robin.
    assert [sorted(r) for r in out.rounds] == [
        sorted([(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4), (6, 7), (7, 6)]),
        [(5, 7), (7, 5)],
        sorted([(1, 3), (3, 1), (1, 5), (5, 1), (3, 5), (5, 3)])]
    assert out.stats["byes"] == 2 and out.stats["rounds"] == 3
    assert out.ranking[:3] == [1, 3, 5]
    assert "top 3: ordered by a round robin among them" in out.to_selection().summary()
    # #7 went out in round 2; then the round-1 losers by mean probability of beating the opponent they met
    assert out.ranking[3] == 7
    losers = out.ranking[4:]
    mean = {c: out.matrix.mean_prob(c) for c in losers}
    assert sorted(losers) == [0, 2, 4, 6] and [mean[c] for c in losers] == sorted(mean.values(), reverse=True)


def test_without_records_the_byes_of_a_last_round_go_as_in_the_knockout():
    t = Tournament(5, "knockout", orders="one", top_k=4, finalists=4)
    assert t.pending_round() == [(0, 1)]  # one match to lose; #4, #3, #2 sit out (the last in bracket order)
    t.record([Comparison(0, 1, "B", 0.3)])
    assert t.pending_round() == [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    assert t.stats()["byes"] == 3


def test_k_of_one_is_the_knockout_and_k_of_n_the_round_robin(synthetic_judge):
    strengths = [0.3, 1.2, 0.1, 2.0, 0.8, 1.7, 0.5]
    knockout = run_tournament(7, synthetic_judge(strengths), strategy="knockout")
    top1 = run_tournament(7, synthetic_judge(strengths), strategy="knockout", top_k=1)
    assert (top1.ranking, top1.rounds, top1.deciding_pairs) == (knockout.ranking, knockout.rounds,
                                                                 knockout.deciding_pairs)
    rr = run_tournament(7, synthetic_judge(strengths), strategy="round_robin")
    for k in (7, 8, 100):  # clamped to n
        full = run_tournament(7, synthetic_judge(strengths), strategy="knockout", top_k=k)
        assert (full.ranking, full.rounds, full.deciding_pairs) == (rr.ranking, rr.rounds, rr.deciding_pairs)
        assert full.stats["top_k"] == 7
    # the round robin already ranks everyone: top_k changes nothing but the stats
    rr3 = run_tournament(7, synthetic_judge(strengths), strategy="round_robin", top_k=3)
    assert (rr3.ranking, rr3.rounds) == (rr.ranking, rr.rounds) and rr3.stats["top_k"] == 3
    assert rr.stats["top_k"] is None and knockout.stats["top_k"] is None


def test_deciding_pairs_are_the_winners_knockout_matches_then_its_final_contenders(table_judge):
    # 6 candidates, k = 3: round 1 (0,1) (2,3) (4,5) -> 0, 2, 4 go through; the final: 2 beats 0 and 4, 0 beats 4
    p = {(i, j): 0.5 for i in range(6) for j in range(i + 1, 6)}
    p.update({(0, 1): 0.8, (2, 3): 0.7, (4, 5): 0.9, (0, 2): 0.3, (2, 4): 0.6, (0, 4): 0.55})
    t = Tournament(6, "knockout", orders="both", top_k=3, finalists=3)
    judge = table_judge(p)
    while pairs := t.pending_round():
        t.record(judge(pairs))
    assert t.ranking()[:3] == [2, 0, 4] and t.ranking()[3:] == [3, 1, 5]  # losers by mean P: 0.3, 0.2, 0.1
    # #0 (1 win) and #4 (0 wins) could each draw level with #2 (2 wins) if their match with it flipped
    assert t.deciding_matches() == [(2, 3), (2, 0), (2, 4)]
    assert t.deciding_pairs() == [(2, 3), (3, 2), (2, 0), (0, 2), (2, 4), (4, 2)]


def test_hybrid_reasons_about_the_top_k_deciding_pairs(synthetic_judge):
    fast = synthetic_judge([0.0, 2.0, 1.0, 3.0, 0.5])
    reason = synthetic_judge([0.0, 2.0, 1.0, 3.0, 0.5], reasoning="because")
    policy = SelectionPolicy(5, "knockout", mode="hybrid", top_k=2)
    modes = []
    while (nxt := policy.pending_round()) is not None:
        pairs, mode = nxt
        modes.append(mode)
        policy.record((fast if mode == "fast" else reason)(pairs))
    assert modes[-1] == "reason" and modes.count("reason") == 1
    sel = policy.selection(list(range(5)))
    assert sel.winner == 3 and sel.ranking[:2] == [3, 1] and sel.stats["top_k"] == 2
    assert sorted((c.first, c.second) for c in sel.comparisons if c.mode == "reason") == sorted(sel.deciding_pairs)
    assert (3, 1) in sel.deciding_pairs and (1, 3) in sel.deciding_pairs


def test_by_default_the_round_robin_takes_twice_k_finalists(table_judge):
    for n, k in ((8, 3), (16, 3), (9, 2), (5, 3), (6, 1)):
        judge = table_judge(_random_table(n, seed=7 * n + k))
        out = run_tournament(n, judge, strategy="knockout", top_k=k, orders="one")
        f = 1 if k == 1 else min(n, 2 * k)
        finalists = sorted(out.ranking[:f])
        rr = run_tournament(f, _sub_judge(judge, finalists), strategy="round_robin", orders="one")
        assert out.ranking[:f] == [finalists[c] for c in rr.ranking], (n, k)
        assert len(out.comparisons) == (n - f) + f * (f - 1) // 2, (n, k)


def test_twice_k_finalists_recover_a_strong_candidate_the_bracket_knocked_out(synthetic_judge):
    # #6 and #7 (the two strongest) meet in round 1 of the bracket; #4 and #5 (third and fourth) too
    strengths = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    k_finalists = run_tournament(8, synthetic_judge(strengths), strategy="knockout", top_k=3, finalists=3)
    default = run_tournament(8, synthetic_judge(strengths), strategy="knockout", top_k=3)
    assert k_finalists.ranking[:3] != [7, 6, 5]
    assert default.ranking[:3] == [7, 6, 5]
    assert len(default.comparisons) < 8 * 7  # fewer than the full round robin


@pytest.mark.parametrize("bad", [0, -2, True, False, 2.0, "3", [3]])
def test_a_bad_top_k_is_invalid_input(bad):
    with pytest.raises(InvalidInputError, match="top_k must be an int >= 1"):
        Tournament(4, "knockout", top_k=bad)
    with pytest.raises(InvalidInputError, match="top_k"):
        SelectionPolicy(4, "round_robin", top_k=bad)
