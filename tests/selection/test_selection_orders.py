"""Orders: both, one, and adaptive (the second order only where the first is not decisive), and both_orders."""

from __future__ import annotations

import random

import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import DECISIVE_P, Comparison, Tournament, run_tournament
from c4u_engine.selection.orders import ORDERS, resolve_orders
from c4u_engine.selection.policy import SelectionPolicy


def _strengths(n: int, seed: int) -> list[float]:
    values = [0.4 * k for k in range(n)]
    random.Random(seed).shuffle(values)
    return values


def test_adaptive_plays_the_second_order_of_exactly_the_undecided_matches(table_judge):
    p_a = {(0, 1): 0.9,  # decisive for #0
           (2, 3): 0.65, (3, 2): 0.9,  # undecided; the second order turns the match: 3 wins (0.375 for #2)
           (4, 5): 0.3,  # decisive for #5, exactly at the threshold
           (7, 6): 0.8,  # (6, 7) is unparsable: never decisive; the second order gives it to #7
           (0, 3): 0.95,  # decisive
           (5, 7): 0.6, (7, 5): 0.45,  # undecided; both orders together: #5 (0.575)
           (0, 5): 0.2}  # decisive: #5 wins
    judge = table_judge(p_a, unparsable={(6, 7)})
    out = run_tournament(8, judge, strategy="knockout", orders="adaptive", decisive_p=0.7)
    assert out.rounds == [[(0, 1), (2, 3), (4, 5), (6, 7)], [(3, 2), (7, 6)],  # knockout round 1, its second orders
                          [(0, 3), (5, 7)], [(7, 5)],  # knockout round 2: #3 and #7 went through on both orders
                          [(0, 5)]]
    assert judge.batches == out.rounds and out.winner == 5 and out.ranking[:2] == [5, 0]
    assert out.stats["orders"] == "adaptive" and out.stats["both_orders"] is False
    assert out.stats["comparisons"] == 10 and out.stats["pairs"] == 7 and out.stats["comparisons_saved"] == 4
    # the deciding pairs: the winner's matches, in each order that was judged
    assert out.deciding_pairs == [(4, 5), (5, 7), (7, 5), (0, 5)]
    assert ", second orders not played: 4" in out.to_selection().summary()


def test_the_threshold_is_decisive_at_and_beyond_only(table_judge):
    for p, decided in ((0.7, True), (0.3, True), (0.6999, False), (0.3001, False), (1.0, True), (0.5, False)):
        t = Tournament(2, "knockout", orders="adaptive", decisive_p=0.7)
        t.record(table_judge({(0, 1): p, (1, 0): 0.5})(t.pending_round()))
        assert t.done is decided and (t.pending_round() == [] if decided else t.pending_round() == [(1, 0)]), p
    with pytest.raises(InvalidInputError, match="decisive_p"):
        Tournament(2, orders="adaptive", decisive_p=0.5)
    assert 0.5 < DECISIVE_P < 1.0


def test_round_robin_plays_its_second_orders_in_one_extra_round(table_judge):
    p_a = {(i, j): 0.9 if (i + j) % 2 else 0.6 for i in range(5) for j in range(i + 1, 5)}
    out = run_tournament(5, table_judge(p_a), strategy="round_robin", orders="adaptive")
    undecided = [(i, j) for i in range(5) for j in range(i + 1, 5) if (i + j) % 2 == 0]
    assert out.rounds == [[(i, j) for i in range(5) for j in range(i + 1, 5)], [(j, i) for i, j in undecided]]
    assert out.stats["comparisons_saved"] == 10 - len(undecided)


@pytest.mark.parametrize("strategy", ["knockout", "round_robin"])
def test_adaptive_is_one_order_when_all_is_decisive_and_both_when_nothing_is(synthetic_judge, strategy):
    for n in range(2, 12):
        strengths = _strengths(n, seed=n)
        one = run_tournament(n, synthetic_judge(strengths, bias=0.3), strategy=strategy, orders="one")
        sure = run_tournament(n, synthetic_judge(strengths, bias=0.3), strategy=strategy, orders="adaptive",
                              decisive_p=0.51)  # every gap here is >= 0.4: P is never within 0.01 of 0.5
        assert (sure.rounds, sure.ranking) == (one.rounds, one.ranking)
        both = run_tournament(n, synthetic_judge(strengths, bias=0.3), strategy=strategy, orders="both")
        unsure = run_tournament(n, synthetic_judge(strengths, bias=0.3), strategy=strategy, orders="adaptive",
                                decisive_p=1.0)
        assert unsure.ranking == both.ranking and sorted(unsure.comparisons, key=lambda c: (c.first, c.second)) \
            == sorted(both.comparisons, key=lambda c: (c.first, c.second))
        assert len(unsure.rounds) == 2 * len(both.rounds) and unsure.stats["comparisons_saved"] == 0
        assert one.stats["comparisons_saved"] == len(one.comparisons) and both.stats["comparisons_saved"] == 0


def test_adaptive_with_top_k_and_a_seed(synthetic_judge):
    strengths = _strengths(11, seed=4)
    for seed in (None, 3):
        out = run_tournament(11, synthetic_judge(strengths, bias=0.2), strategy="knockout", orders="adaptive",
                             top_k=3, seed=seed)
        matches = (11 - 6) + 6 * 5 // 2  # a knockout to 2k = 6 finalists, then their round robin
        assert out.stats["comparisons"] + out.stats["comparisons_saved"] == 2 * matches
        assert out.ranking[:3] == sorted(out.ranking[:3], key=lambda c: -strengths[c])  # a transitive judge


def test_the_second_orders_round_is_a_look_until_recorded():
    t = Tournament(2, "knockout", orders="adaptive")
    assert t.pending_round() == [(0, 1)]
    t.record([Comparison(0, 1, "A", 0.55)])
    assert t.pending_round() == [(1, 0)] and t.pending_round() == [(1, 0)] and not t.done
    with pytest.raises(InvalidInputError, match=r"missing \[\(1, 0\)\]"):
        t.record([Comparison(0, 1, "A", 0.55)])
    t.record([Comparison(1, 0, "A", 0.7)])
    assert t.done and t.ranking() == [1, 0]


def test_hybrid_reasons_about_the_deciding_orders_that_were_played(table_judge):
    fast = table_judge({(0, 1): 0.9, (2, 3): 0.6, (3, 2): 0.45, (0, 2): 0.2})
    reason = table_judge({(0, 1): 0.9, (2, 3): 0.6, (3, 2): 0.45, (0, 2): 0.2})
    policy = SelectionPolicy(4, "knockout", mode="hybrid", orders="adaptive")
    rounds = []
    while (nxt := policy.pending_round()) is not None:
        rounds.append(nxt)
        policy.record((fast if nxt[1] == "fast" else reason)(nxt[0]))
    assert rounds == [([(0, 1), (2, 3)], "fast"), ([(3, 2)], "fast"), ([(0, 2)], "fast"),
                      ([(2, 3), (3, 2), (0, 2)], "reason")]
    sel = policy.selection(list(range(4)))
    assert sel.winner == 2 and sel.stats["hybrid_reasoned"] == 3 and sel.stats["comparisons_saved"] == 2


@pytest.mark.parametrize("orders,both_orders,want", [
    (None, None, "both"), (None, True, "both"), (None, False, "one"), ("one", None, "one"),
    ("adaptive", None, "adaptive"), ("both", True, "both"), ("one", False, "one")])
def test_both_orders_is_the_older_spelling(orders, both_orders, want):
    assert resolve_orders(orders, both_orders) == want
    assert Tournament(3, "knockout", both_orders, orders=orders).orders == want
    assert SelectionPolicy(3, "knockout", both_orders, orders=orders).tournament.orders == want


@pytest.mark.parametrize("orders,both_orders", [("adaptive", True), ("adaptive", False), ("one", True),
                                                ("both", False), ("two", None), (True, None)])
def test_conflicting_or_unknown_orders_are_invalid_input(orders, both_orders):
    with pytest.raises(InvalidInputError, match="orders"):
        resolve_orders(orders, both_orders)
    with pytest.raises(InvalidInputError, match="orders"):
        SelectionPolicy(3, "knockout", both_orders, orders=orders)
    assert ORDERS == ("both", "one", "adaptive")


def test_the_default_plays_both_orders_as_before(synthetic_judge):
    strengths = _strengths(9, seed=2)
    default = run_tournament(9, synthetic_judge(strengths), strategy="knockout")
    old = run_tournament(9, synthetic_judge(strengths), strategy="knockout", both_orders=True)
    assert default == old and default.stats["orders"] == "both" and default.stats["both_orders"] is True
    assert all(len(r) % 2 == 0 and set(r) == {(b, a) for a, b in r} for r in default.rounds)
