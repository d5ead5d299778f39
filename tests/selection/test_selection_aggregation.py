"""PairwiseMatrix: combining orders, wins, consistency, unparsable answers."""

from __future__ import annotations

import pytest

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection import Comparison, PairwiseMatrix


def test_both_orders_are_averaged():
    m = PairwiseMatrix([0, 1], [Comparison(0, 1, "A", 0.8), Comparison(1, 0, "A", 0.6)])
    assert m.prob(0, 1) == pytest.approx((0.8 + 1 - 0.6) / 2)
    assert m.prob(1, 0) == pytest.approx(1 - m.prob(0, 1))
    pair = m.pair(1, 0)
    assert pair.p_low_shown_first == pytest.approx(0.8) and pair.p_low_shown_second == pytest.approx(0.4)
    assert pair.inconsistent and pair.winner == 0 and pair.loser == 1
    assert m.inconsistent_orders == 1


def test_one_order_decides_alone_and_gaps_are_none():
    m = PairwiseMatrix([0, 1, 2], [Comparison(2, 0, "B", 0.3)])
    assert m.prob(0, 2) == pytest.approx(0.7)
    assert m.prob(0, 1) is None and m.prob(1, 1) is None
    assert m.rows() == [[None, None, pytest.approx(0.7)], [None, None, None], [pytest.approx(0.3), None, None]]
    assert m.opponents(1) == [] and m.mean_prob(1) is None
    assert not m.pair(0, 2).inconsistent


def test_each_order_has_equal_weight():
    # two fast-and-reason judgements of (0, 1), one of (1, 0): the orders still count half each
    comps = [Comparison(0, 1, "A", 0.9), Comparison(0, 1, "A", 0.7, mode="reason"), Comparison(1, 0, "B", 0.2)]
    m = PairwiseMatrix([0, 1], comps)
    assert m.prob(0, 1) == pytest.approx(((0.9 + 0.7) / 2 + 0.8) / 2)
    assert m.pair(0, 1).comparisons == 3


def test_unparsable_counts_as_half_whatever_prob_a_says():
    m = PairwiseMatrix([0, 1], [Comparison(0, 1, None, 0.99, error="unparsable answer: 'x'"),
                                Comparison(1, 0, "B", 0.1)])
    assert m.prob(0, 1) == pytest.approx((0.5 + 0.9) / 2)
    assert m.unparsable == 1 and not m.pair(0, 1).inconsistent  # a 0.5 is undecided, not a disagreement


def test_wins_means_and_sparse_ids():
    # ids need not be 0..n-1 (a report works in input indices)
    comps = [Comparison(3, 7, "A", 0.9), Comparison(7, 3, "B", 0.2), Comparison(3, 10, "A", 0.6),
             Comparison(10, 7, "A", 0.55)]
    m = PairwiseMatrix([3, 7, 10], comps)
    assert m.wins() == {3: 2, 7: 0, 10: 1}
    assert m.summed_prob(3) == pytest.approx(0.85 + 0.6)
    assert m.mean_prob(3) == pytest.approx((0.85 + 0.6) / 2)
    assert m.rows([10, 3])[0] == [None, pytest.approx(0.4)]
    assert m.stats() == {"comparisons": 4, "pairs": 3, "inconsistent_orders": 0, "unparsable": 0, "tied_pairs": 0}


def test_near_half_is_a_tie_won_by_the_lower_index():
    m = PairwiseMatrix([4, 9], [Comparison(9, 4, "A", 0.5 + 1e-12)])
    assert m.pair(4, 9).tie and m.pair(4, 9).winner == 4
    assert m.wins() == {4: 1, 9: 0}


def test_bad_candidates_raise():
    with pytest.raises(InvalidInputError, match="outside"):
        PairwiseMatrix([0, 1], [Comparison(0, 2, "A", 0.6)])
    with pytest.raises(InvalidInputError, match="repeat"):
        PairwiseMatrix([0, 0], [])
    with pytest.raises(InvalidInputError, match="not in pair"):
        PairwiseMatrix([0, 1, 2], [Comparison(0, 1, "A", 0.6)]).pair(0, 1).p(2)


def test_float32_noise_around_one_half_is_a_tie_won_by_the_lower_index():
    # a judge that cannot tell 2 and 3 apart gives both orders the same P(A); computed in different batches, the two
    # values differ by float32 noise (~1e-7), which must not decide the winner
    for noise in (3e-7, -3e-7):
        p = 0.585313
        matrix = PairwiseMatrix(range(4), [Comparison(2, 3, "A", p), Comparison(3, 2, "A", p + noise)])
        outcome = matrix.pair(2, 3)
        assert outcome.tie and outcome.winner == 2
    clear = PairwiseMatrix(range(4), [Comparison(2, 3, "A", 0.6), Comparison(3, 2, "A", 0.59)])
    assert not clear.pair(2, 3).tie and clear.pair(2, 3).winner == 2
