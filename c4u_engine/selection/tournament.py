"""A tournament: rounds of ordered comparisons for the engine, results back, a ranking at the end.

    t = Tournament(n, "knockout", orders="both", top_k=None)
    while pairs := t.pending_round():        # one round = one engine batch
        t.record(judge(pairs))            # Comparisons for exactly those ordered pairs, any order
    ranking, scores, stats = t.result()

or simply `run_tournament(n, judge, strategy=..., orders=..., top_k=...)`. Pairs are (first, second) candidate ids
in 0..n-1, `first` shown as "Creative A". orders (orders.py): "both" judges every match as (i, j) and (j, i) in the
same round: knockout then costs 2(N-1) comparisons and round robin N(N-1); "one" costs N-1 and N(N-1)/2; "adaptive"
judges one order, then the second order of the matches it did not settle as an extra round, before the strategy
sees the round. `both_orders=True/False` is the older spelling of orders="both"/"one".

top_k=k with the knockout plays `TopK`: a knockout until 2k remain (`finalists=` to choose another count), then a
round robin among them that orders the first k (k is clamped to n: k >= n / 2 is a full round robin; the engine
drops rejected and duplicate inputs, so a caller cannot know n). The
round robin strategy already ranks everyone by every pair: top_k changes nothing there but the stats.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.aggregation import PairwiseMatrix
from c4u_engine.selection.orders import DECISIVE_P, check_decisive_p, decisive, resolve_orders
from c4u_engine.selection.results import Comparison, Selection
from c4u_engine.selection.strategies import STRATEGIES, Knockout, Match, TopK, check_top_k

Pair = tuple[int, int]
Judge = Callable[[list[Pair]], Sequence[Comparison]]


class Tournament:
    """Drives one strategy over candidates 0..n-1; see the module docstring for the loop."""

    def __init__(self, n: int, strategy: str = "knockout", both_orders: bool | None = None, seed: int | None = None,
                 *, orders: str | None = None, top_k: int | None = None, decisive_p: float = DECISIVE_P,
                 finalists: int | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidInputError(f"the number of candidates must be an int, got {n!r}")
        if n < 1:
            raise InvalidInputError(f"no candidates to select from (n = {n}); pass at least one image")
        if strategy not in STRATEGIES:
            raise InvalidInputError(f"unknown strategy {strategy!r}; valid strategies: {sorted(STRATEGIES)}")
        self.n = n
        self.strategy_name = strategy
        self.orders = resolve_orders(orders, both_orders)
        self.decisive_p = check_decisive_p(decisive_p)
        self.top_k = None if top_k is None else min(check_top_k(top_k), n)
        self.seed = seed
        rng = random.Random(seed) if seed is not None else None
        if self.top_k is not None and STRATEGIES[strategy] is Knockout:
            self._strategy = TopK(n, self.top_k, rng, finalists)
        else:
            self._strategy = STRATEGIES[strategy](n, rng)
        self._comparisons: list[Comparison] = []
        self._rounds: list[list[Pair]] = []
        self._pending: list[Pair] | None = None
        self._pending_matches: list[Match] = []
        self._second_orders: list[Pair] = []  # adaptive: the second orders still due for the strategy's round
        self._second_round = False  # adaptive: the pending round is such second orders
        self._matrix = PairwiseMatrix(range(n), [])

    @property
    def both_orders(self) -> bool:
        """True when every match is judged in both orders (orders="both")."""
        return self.orders == "both"

    @property
    def done(self) -> bool:
        """True when no round is pending or due and the strategy has no match left."""
        return self._pending is None and not self._second_orders and self._strategy.done

    @property
    def comparisons(self) -> list[Comparison]:
        """Every recorded comparison, round by round."""
        return list(self._comparisons)

    @property
    def rounds(self) -> list[list[Pair]]:
        """The ordered pairs of each recorded round."""
        return [list(r) for r in self._rounds]

    @property
    def matrix(self) -> PairwiseMatrix:
        """P(i beats j) from everything recorded so far."""
        return self._matrix

    def pending_round(self) -> list[Pair]:
        """The ordered pairs to judge next, as one batch; [] when the tournament is over.

        Asking again before `record` returns the same round.
        """
        if self._pending is None:
            if self._second_orders:
                self._pending, self._second_orders, self._second_round = self._second_orders, [], True
                return list(self._pending)
            self._second_round = False
            self._pending_matches = self._strategy.next_matches()
            if not self._pending_matches:
                return []
            if self.orders == "both":
                self._pending = [p for a, b in self._pending_matches for p in ((a, b), (b, a))]
            else:
                self._pending = list(self._pending_matches)
        return list(self._pending)

    def record(self, results: Sequence[Comparison]) -> None:
        """Hand in the judged comparisons of the current round: one per pair of `pending_round()`, in any order."""
        if self._pending is None:
            raise InvalidInputError("record() called with no round pending; call pending_round() first")
        results = list(results)
        for c in results:
            if not isinstance(c, Comparison):
                raise InvalidInputError(f"record() takes Comparison objects, got {type(c).__name__}")
        wanted, got = Counter(self._pending), Counter((c.first, c.second) for c in results)
        if wanted != got:
            missing, extra = sorted((wanted - got).elements()), sorted((got - wanted).elements())
            raise InvalidInputError(
                f"round {len(self._rounds) + 1} results do not match its pairs: missing {missing}, unexpected {extra}")
        first_orders = self.orders == "adaptive" and not self._second_round
        self._comparisons.extend(results)
        self._rounds.append(self._pending)
        self._pending = None
        self._matrix = PairwiseMatrix(range(self.n), self._comparisons)
        if first_orders:
            # the strategy sees its round only once the matches the first orders left open have their second
            p_first = {(c.first, c.second): c.p_first for c in results}
            self._second_orders = [(b, a) for a, b in self._pending_matches
                                   if not decisive(p_first[(a, b)], self.decisive_p)]
            if self._second_orders:
                return
        self._strategy.record(self._matrix)

    def _check_done(self) -> None:
        if not self.done:
            raise InvalidInputError(
                "the tournament is not finished: call pending_round() and record() until pending_round() returns []")

    def ranking(self) -> list[int]:
        """All candidate ids, best first."""
        self._check_done()
        return self._strategy.ranking(self._matrix)

    def scores(self) -> dict[int, float]:
        """Each candidate's mean probability of beating the opponents it met (1.0 for a lone candidate)."""
        self._check_done()
        return self._strategy.scores(self._matrix)

    def stats(self) -> dict[str, Any]:
        """Counters: strategy, orders, top_k, rounds, comparisons (and comparisons_saved: second orders not played),
        inconsistent_orders, unparsable, tied pairs, byes."""
        stats: dict[str, Any] = {
            "strategy": self.strategy_name,
            "orders": self.orders,
            "both_orders": self.both_orders,
            "top_k": self.top_k,
            "seed": self.seed,
            "candidates": self.n,
            "rounds": len(self._rounds),
        }
        stats.update(self._matrix.stats())
        stats["comparisons_saved"] = 2 * stats["pairs"] - stats["comparisons"]
        stats.update(self._strategy.stats())
        return stats

    def result(self) -> tuple[list[int], dict[int, float], dict[str, Any]]:
        """(ranking, scores, stats) of the finished tournament."""
        return self.ranking(), self.scores(), self.stats()

    def deciding_matches(self) -> list[Match]:
        """The matches that decided the winner as (winner, opponent); see `Knockout`, `RoundRobin`, `TopK`."""
        self._check_done()
        return self._strategy.deciding_matches(self._matrix)

    def deciding_pairs(self) -> list[Pair]:
        """The ordered pairs judged in the deciding matches: each order of them that was judged.

        Knockout: the winner's matches, first round first. Round robin: the winner against each contender (a
        candidate that would draw level on wins if that one match flipped; always the runner-up). Top-k: the
        winner's knockout matches, then its contenders in the round robin of the finalists. This is where a
        hybrid mode re-judges with chain-of-thought reasoning: the comparisons that made the winner the winner.
        """
        judged = {(c.first, c.second) for c in self._comparisons}
        pairs: list[Pair] = []
        for a, b in self.deciding_matches():
            pairs.extend(p for p in ((a, b), (b, a)) if p in judged)
        return pairs

    def selection(self) -> Selection:
        """The finished tournament as a `Selection` over candidate ids (see `TournamentOutcome.to_selection`)."""
        return self.outcome().to_selection()

    def outcome(self) -> TournamentOutcome:
        """Everything about the finished tournament in one value."""
        ranking, scores, stats = self.result()
        return TournamentOutcome(ranking, scores, self.comparisons, stats, self.deciding_pairs(), self.rounds)


@dataclass(frozen=True)
class TournamentOutcome:
    """A finished tournament, over candidate ids 0..n-1."""

    ranking: list[int]
    scores: dict[int, float]
    comparisons: list[Comparison]
    stats: dict[str, Any]
    deciding_pairs: list[Pair]
    rounds: list[list[Pair]]

    @property
    def winner(self) -> int:
        """ranking[0]."""
        return self.ranking[0]

    @property
    def matrix(self) -> PairwiseMatrix:
        """P(i beats j) over all comparisons of the tournament."""
        return PairwiseMatrix(range(len(self.ranking)), self.comparisons)

    def to_selection(self, input_indices: Sequence[int] | None = None, *, rejected: Mapping[int, str] | None = None,
                     duplicates: Mapping[int, int] | None = None,
                     stats: Mapping[str, Any] | None = None) -> Selection:
        """A `Selection` in input indices: candidate id k is input `input_indices[k]` (identity when None).

        `rejected` and `duplicates` are already in input indices. `stats` (engine counters) are merged over the
        tournament's counters.
        """
        n = len(self.ranking)
        ids = list(range(n)) if input_indices is None else list(input_indices)
        if len(ids) != n:
            raise InvalidInputError(f"input_indices has {len(ids)} entries for {n} candidates")
        return Selection(
            winner=ids[self.winner],
            ranking=[ids[c] for c in self.ranking],
            scores={ids[c]: s for c, s in self.scores.items()},
            comparisons=[c.remap(ids) for c in self.comparisons],
            rejected=dict(rejected or {}),
            duplicates=dict(duplicates or {}),
            stats={**self.stats, **(stats or {})},
            deciding_pairs=[(ids[a], ids[b]) for a, b in self.deciding_pairs],
        )


def run_tournament(n: int, judge: Judge, *, strategy: str = "knockout", both_orders: bool | None = None,
                   seed: int | None = None, orders: str | None = None, top_k: int | None = None,
                   decisive_p: float = DECISIVE_P, finalists: int | None = None) -> TournamentOutcome:
    """Run a whole tournament, calling `judge` once per round with that round's ordered pairs (one batch)."""
    tournament = Tournament(n, strategy, both_orders, seed, orders=orders, top_k=top_k, decisive_p=decisive_p,
                            finalists=finalists)
    while pairs := tournament.pending_round():
        tournament.record(judge(pairs))
    return tournament.outcome()
