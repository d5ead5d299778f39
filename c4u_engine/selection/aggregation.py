"""Pairwise aggregation: from judged comparisons to P(i beats j), pair winners, win counts, order consistency.

The judge sees an ordered pair (A, B) and has a position bias. Showing a pair in both orders and averaging
    P(i beats j) = (mean P_A(i, j) + mean (1 - P_A(j, i))) / 2
cancels a bias that shifts both orders alike. Each order gets equal weight, even when one order was judged more
often (e.g. a fast and a reasoning comparison of the same ordered pair). With one order only, that order decides.
An unparsable comparison counts as 0.5 (no evidence) and is counted in `unparsable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Sequence

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.results import Comparison

# Probabilities this close to 0.5 are ties: float noise must not pick a winner. Not only (0.7 + (1 - 0.7)) / 2: a
# float32 model's P(A) moves by ~1e-7 with the batch it was computed in (matmul blocking), so a judge that cannot
# tell two creatives apart (both orders at the same P) would otherwise have its winner decided by which requests
# happened to share its batch.
TIE_EPS = 1e-6


def _side(p: float) -> int:
    """+1 if p says the first candidate wins, -1 if the second does, 0 for a tie."""
    return 0 if abs(p - 0.5) <= TIE_EPS else (1 if p > 0.5 else -1)


@dataclass(frozen=True)
class PairOutcome:
    """Everything judged about one unordered pair {low, high} (low < high)."""

    low: int
    high: int
    p_low: float  # P(low beats high), both orders combined
    p_low_shown_first: float | None  # from the comparisons with low as "Creative A"; None if none
    p_low_shown_second: float | None  # from the comparisons with high as "Creative A"; None if none
    comparisons: int
    unparsable: int

    @property
    def inconsistent(self) -> bool:
        """Both orders were judged and they disagree on the winner (a tie in one order is not a disagreement)."""
        if self.p_low_shown_first is None or self.p_low_shown_second is None:
            return False
        return _side(self.p_low_shown_first) * _side(self.p_low_shown_second) < 0

    @property
    def tie(self) -> bool:
        """The combined probability is 0.5 (within TIE_EPS): the lower index wins by rule."""
        return _side(self.p_low) == 0

    @property
    def winner(self) -> int:
        """The settled winner: by the combined probability; an exact tie goes to the lower index."""
        return self.high if _side(self.p_low) < 0 else self.low

    @property
    def loser(self) -> int:
        """The member of the pair that is not the winner."""
        return self.low if self.winner == self.high else self.high

    def p(self, candidate: int) -> float:
        """P(candidate beats the other member of this pair)."""
        if candidate == self.low:
            return self.p_low
        if candidate == self.high:
            return 1.0 - self.p_low
        raise InvalidInputError(f"candidate {candidate} is not in pair ({self.low}, {self.high})")


class PairwiseMatrix:
    """P(i beats j) over a set of candidate ids, from any list of comparisons between them.

    Ids are arbitrary non-negative ints (candidate ids 0..n-1 in a tournament, input indices in a report).
    """

    def __init__(self, candidates: Sequence[int], comparisons: Iterable[Comparison]) -> None:
        self.candidates: tuple[int, ...] = tuple(candidates)
        if len(set(self.candidates)) != len(self.candidates):
            raise InvalidInputError(f"candidate ids repeat: {list(self.candidates)}")
        known = set(self.candidates)
        # (low, high) -> ([p(low beats high) with low shown first], [... with high shown first], unparsable count)
        evidence: dict[tuple[int, int], tuple[list[float], list[float], list[int]]] = {}
        self.comparisons = 0
        for c in comparisons:
            if c.first not in known or c.second not in known:
                raise InvalidInputError(
                    f"comparison ({c.first}, {c.second}) names a candidate outside {sorted(known)}")
            low, high = min(c.first, c.second), max(c.first, c.second)
            shown_first, shown_second, bad = evidence.setdefault((low, high), ([], [], [0]))
            if c.first == low:
                shown_first.append(c.p_first)
            else:
                shown_second.append(1.0 - c.p_first)
            bad[0] += 0 if c.parsed else 1
            self.comparisons += 1
        self._pairs: dict[tuple[int, int], PairOutcome] = {}
        for (low, high), (shown_first, shown_second, bad) in sorted(evidence.items()):
            p1 = fmean(shown_first) if shown_first else None
            p2 = fmean(shown_second) if shown_second else None
            combined = fmean([p for p in (p1, p2) if p is not None])
            self._pairs[(low, high)] = PairOutcome(low, high, combined, p1, p2,
                                                   len(shown_first) + len(shown_second), bad[0])

    def pair(self, i: int, j: int) -> PairOutcome | None:
        """The outcome of pair {i, j}, None if they were never compared."""
        return self._pairs.get((min(i, j), max(i, j)))

    def pairs(self) -> list[PairOutcome]:
        """Every compared pair, sorted by (low, high)."""
        return list(self._pairs.values())

    def prob(self, i: int, j: int) -> float | None:
        """P(i beats j), None if i == j or they were never compared."""
        outcome = self.pair(i, j) if i != j else None
        return None if outcome is None else outcome.p(i)

    def opponents(self, i: int) -> list[int]:
        """The candidates i was compared with, in candidate order."""
        return [j for j in self.candidates if j != i and self.pair(i, j) is not None]

    def wins(self) -> dict[int, int]:
        """Pair-level wins of each candidate (a pair counts once, whatever the number of comparisons)."""
        counts = {c: 0 for c in self.candidates}
        for outcome in self._pairs.values():
            counts[outcome.winner] += 1
        return counts

    def summed_prob(self, i: int) -> float:
        """Sum over i's opponents of P(i beats them)."""
        return sum(self.prob(i, j) for j in self.opponents(i))  # type: ignore[misc]

    def mean_prob(self, i: int) -> float | None:
        """Mean over i's opponents of P(i beats them); None if i was never compared."""
        opponents = self.opponents(i)
        return self.summed_prob(i) / len(opponents) if opponents else None

    def rows(self, order: Sequence[int] | None = None) -> list[list[float | None]]:
        """The matrix as rows: rows(order)[r][c] = P(order[r] beats order[c]); None on the diagonal and gaps."""
        order = self.candidates if order is None else order
        return [[self.prob(i, j) for j in order] for i in order]

    @property
    def inconsistent_orders(self) -> int:
        """Pairs judged in both orders whose orders disagree on the winner."""
        return sum(1 for o in self._pairs.values() if o.inconsistent)

    @property
    def unparsable(self) -> int:
        """Comparisons whose answer could not be parsed (counted as 0.5)."""
        return sum(o.unparsable for o in self._pairs.values())

    def stats(self) -> dict[str, object]:
        """Counters for `Selection.stats`; counts only, so they stay true when ids are remapped to input indices."""
        return {
            "comparisons": self.comparisons,
            "pairs": len(self._pairs),
            "inconsistent_orders": self.inconsistent_orders,
            "unparsable": self.unparsable,
            "tied_pairs": sum(1 for o in self._pairs.values() if o.tie),
        }
