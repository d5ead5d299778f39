"""Selection strategies: which matches to play, round by round, and how to rank the candidates afterwards.

A strategy thinks in MATCHES: unordered pairs of candidate ids, written (a, b) with `a` the one to show as
"Creative A" when a match is judged in one order only. `Tournament` turns matches into ordered comparisons (one or
both orders), runs the bookkeeping and settles each match with `PairwiseMatrix` (combined probability; an exact tie
goes to the lower index). A strategy sees the results of a round before it names the next (knockout is adaptive).

Determinism: with `rng=None` everything follows input order. With an `rng` (a seeded `random.Random`) the knockout
bracket is shuffled, and in one-order play each match is shown in a random order, so that the judge's position bias
becomes noise instead of a systematic advantage for low indices.

`TopK` is a knockout played until f = 2k candidates remain, then a round robin among those f: a ranking whose first k
are ordered as a round robin among the finalists would order them, for N-f knockout matches plus f(f-1)/2, instead of
N(N-1)/2.
It is chosen by `top_k`, not by name (see `Tournament`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Sequence

from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.aggregation import PairwiseMatrix

Match = tuple[int, int]


class Strategy(ABC):
    """The plan of one tournament over candidate ids 0..n-1 (n >= 1, checked by `Tournament`)."""

    name: ClassVar[str]

    def __init__(self, n: int, rng: random.Random | None = None) -> None:
        self.n = n
        self.rng = rng

    def _orient(self, a: int, b: int) -> Match:
        """(a, b) in the order to show when one order is judged: as given, or a coin flip with an rng."""
        if self.rng is not None and self.rng.random() < 0.5:
            return (b, a)
        return (a, b)

    @property
    @abstractmethod
    def done(self) -> bool:
        """True when no match is left to play."""

    @abstractmethod
    def next_matches(self) -> list[Match]:
        """The matches of the next round; called once per round, then `record` before the next call."""

    @abstractmethod
    def record(self, matrix: PairwiseMatrix) -> None:
        """Consume the round just played; `matrix` holds every comparison of the tournament so far."""

    @abstractmethod
    def ranking(self, matrix: PairwiseMatrix) -> list[int]:
        """All candidate ids, best first (only once `done`)."""

    @abstractmethod
    def deciding_matches(self, matrix: PairwiseMatrix) -> list[Match]:
        """The matches that decided the winner, as (winner, opponent)."""

    def scores(self, matrix: PairwiseMatrix) -> dict[int, float]:
        """Each candidate's mean probability of beating the opponents it met; 1.0 for a lone, unopposed candidate."""
        return {c: (p if (p := matrix.mean_prob(c)) is not None else 1.0) for c in range(self.n)}

    def stats(self) -> dict[str, object]:
        return {}


class Knockout(Strategy):
    """Single elimination: N-1 matches in ceil(log2 N) rounds.

    Bracket: candidates in input order (shuffled with an rng); each round pairs neighbours in bracket order. With an
    odd number alive, one candidate sits the round out (a bye): the one with the fewest byes so far, the last in
    bracket order among those, so that no candidate gets a second bye while another has had none.
    Ranking: the winner, then by the round of elimination (later is better), then by mean probability of beating the
    opponents met, then by index. Deciding matches: the winner's matches, first round first.

    `survivors` > 1 stops the knockout when that many are left (for `TopK`): the last round then plays only as many
    matches as must still be lost, among the candidates with the weakest record (mean probability of beating the
    opponents met; 0.5 before any match); the stronger ones get byes: the weakest meeting is the one least likely
    to knock out a top-k creative. On the tuning groups of benchmarks/bench_ranking_strategies.py (N = 8, k = 3)
    this kept the round robin's top 3 in 86 of 200 groups, byes in bracket order in 53 (BENCHMARKS.md).
    """

    name = "knockout"

    def __init__(self, n: int, rng: random.Random | None = None, survivors: int = 1) -> None:
        super().__init__(n, rng)
        self.survivors = survivors
        self.alive = list(range(n))
        if rng is not None:
            rng.shuffle(self.alive)
        self.round = 0
        self.eliminated_in: dict[int, int] = {}
        self.byes: dict[int, int] = {c: 0 for c in range(n)}
        self.won: dict[int, list[Match]] = {c: [] for c in range(n)}  # (c, beaten opponent), in round order
        self._pending: list[Match] = []
        self._matrix: PairwiseMatrix | None = None  # the last one recorded

    @property
    def done(self) -> bool:
        return len(self.alive) <= self.survivors and not self._pending

    def _record_of(self, c: int) -> float:
        mean = self._matrix.mean_prob(c) if self._matrix is not None else None
        return 0.5 if mean is None else mean

    def next_matches(self) -> list[Match]:
        if self.done:
            return []
        players = list(self.alive)
        matches = min(len(players) // 2, len(players) - self.survivors)
        partial = matches < len(players) // 2
        position = {c: k for k, c in enumerate(players)}

        def bye_first(c: int) -> tuple[float, ...]:
            fair = (self.byes[c], -position[c])  # fewest byes, then last in bracket order
            return (-self._record_of(c), *fair) if partial else fair

        for bye in sorted(players, key=bye_first)[:len(players) - 2 * matches]:
            self.byes[bye] += 1
            players.remove(bye)
        self.round += 1
        self._pending = [self._orient(players[k], players[k + 1]) for k in range(0, len(players), 2)]
        return list(self._pending)

    def record(self, matrix: PairwiseMatrix) -> None:
        losers = set()
        for a, b in self._pending:
            outcome = matrix.pair(a, b)
            if outcome is None:  # Tournament checks coverage; this guards direct use
                raise InvalidInputError(f"match ({a}, {b}) of round {self.round} has no result")
            self.won[outcome.winner].append((outcome.winner, outcome.loser))
            self.eliminated_in[outcome.loser] = self.round
            losers.add(outcome.loser)
        self.alive = [c for c in self.alive if c not in losers]
        self._pending = []
        self._matrix = matrix

    def ranking(self, matrix: PairwiseMatrix) -> list[int]:
        (winner,) = self.alive
        return [winner] + self.eliminated(matrix)

    def eliminated(self, matrix: PairwiseMatrix) -> list[int]:
        """The candidates knocked out, best first: by round of elimination, mean probability, index."""

        def key(c: int) -> tuple[float, float, int]:
            mean = matrix.mean_prob(c)
            return (-self.eliminated_in[c], -(mean if mean is not None else 0.0), c)

        return sorted(self.eliminated_in, key=key)

    def deciding_matches(self, matrix: PairwiseMatrix) -> list[Match]:
        return list(self.won[self.alive[0]])

    def stats(self) -> dict[str, object]:
        return {"byes": sum(self.byes.values())}


class RoundRobin(Strategy):
    """Everyone meets everyone, in ONE round (one batch): N(N-1)/2 matches.

    Ranking: pair-level wins (the settled winner of each pair), then summed probability of beating the others, then
    index. Deciding matches: the winner's matches against its contenders, the candidates that would draw level with
    or overtake the winner on wins if that single match went the other way (wins[c] + 1 >= wins[winner] - 1); the
    runner-up is always one of them. Ordered by ranking, so the runner-up comes first.
    """

    name = "round_robin"

    def __init__(self, n: int, rng: random.Random | None = None) -> None:
        super().__init__(n, rng)
        self._played = n == 1

    @property
    def done(self) -> bool:
        return self._played

    def next_matches(self) -> list[Match]:
        if self._played:
            return []
        return [self._orient(i, j) for i in range(self.n) for j in range(i + 1, self.n)]

    def record(self, matrix: PairwiseMatrix) -> None:
        self._played = True

    def ranking(self, matrix: PairwiseMatrix) -> list[int]:
        return round_robin_order(matrix, range(self.n))

    def deciding_matches(self, matrix: PairwiseMatrix) -> list[Match]:
        return round_robin_contenders(matrix, self.ranking(matrix))


def _wins_among(matrix: PairwiseMatrix, group: Sequence[int]) -> dict[int, int]:
    """Pair-level wins of each member of `group` against the other members."""
    wins = {c: 0 for c in group}
    for k, i in enumerate(group):
        for j in group[k + 1:]:
            outcome = matrix.pair(i, j)
            if outcome is None:
                raise InvalidInputError(f"round robin pair ({i}, {j}) has no result")
            wins[outcome.winner] += 1
    return wins


def round_robin_order(matrix: PairwiseMatrix, group: Iterable[int]) -> list[int]:
    """`group`, every pair of which was played, best first: wins against the others in the group, then summed
    probability of beating them, then index (`RoundRobin`'s ranking over the group alone)."""
    group = sorted(group)
    wins = _wins_among(matrix, group)
    summed = {i: sum(matrix.prob(i, j) for j in group if j != i) for i in group}  # type: ignore[misc]
    return sorted(group, key=lambda c: (-wins[c], -summed[c], c))


def round_robin_contenders(matrix: PairwiseMatrix, order: Sequence[int]) -> list[Match]:
    """(winner, contender) for a round robin's `order` (best first; see `RoundRobin`)."""
    if len(order) < 2:
        return []
    winner, wins = order[0], _wins_among(matrix, sorted(order))
    # The runner-up has the most wins after the winner, so it is a contender whenever anyone is.
    contenders = [c for c in order[1:] if wins[c] + 1 >= wins[winner] - 1] or [order[1]]
    return [(winner, c) for c in contenders]


FINALISTS_PER_K = 2  # top_k=k plays its round robin among 2k finalists: BENCHMARKS.md, "Ranking strategies"


class TopK(Strategy):
    """A knockout until min(N, FINALISTS_PER_K * k) candidates remain (the finalists), then a round robin among
    them, in one round. A knockout alone keeps a strong candidate only if it never met a stronger one early; twice k
    finalists give the round robin room to recover it at a fraction of a full round robin's comparisons (N = 32,
    k = 3: 26 knockout matches + 15 round robin pairs, against 496 pairs).

    Ranking: the finalists as that round robin orders them (wins among the finalists, then summed probability of
    beating them, then index), then the rest as the knockout leaves them (`Knockout.eliminated`). k >= N / 2 is a
    full round robin; k = 1 is a knockout. Deciding matches: the winner's knockout matches (first round first), then its
    round robin matches against its contenders among the finalists (`RoundRobin`).
    """

    name = "top_k"

    def __init__(self, n: int, k: int, rng: random.Random | None = None, finalists: int | None = None) -> None:
        super().__init__(n, rng)
        self.k = min(check_top_k(k), n)
        wanted = FINALISTS_PER_K * self.k if finalists is None else max(check_top_k(finalists), self.k)
        self.finalist_count = 1 if self.k == 1 else min(n, wanted)
        self.knockout = Knockout(n, rng, survivors=self.finalist_count)
        # the round robin: unplayed | pending | played
        self._final = "played" if self.finalist_count == 1 else "unplayed"

    @property
    def done(self) -> bool:
        return self.knockout.done and self._final == "played"

    def next_matches(self) -> list[Match]:
        if not self.knockout.done:
            return self.knockout.next_matches()
        if self._final != "unplayed":
            return []
        self._final = "pending"
        finalists = self.knockout.alive
        return [self._orient(a, b) for i, a in enumerate(finalists) for b in finalists[i + 1:]]

    def record(self, matrix: PairwiseMatrix) -> None:
        if self._final == "pending":
            self._final = "played"
        else:
            self.knockout.record(matrix)

    def finalists(self, matrix: PairwiseMatrix) -> list[int]:
        """The finalists, best first (only once `done`)."""
        return round_robin_order(matrix, self.knockout.alive)

    def ranking(self, matrix: PairwiseMatrix) -> list[int]:
        return self.finalists(matrix) + self.knockout.eliminated(matrix)

    def deciding_matches(self, matrix: PairwiseMatrix) -> list[Match]:
        finalists = self.finalists(matrix)
        return list(self.knockout.won[finalists[0]]) + round_robin_contenders(matrix, finalists)

    def stats(self) -> dict[str, object]:
        return self.knockout.stats()


def check_top_k(k: Any) -> int:
    """A valid top_k: an int >= 1 (a bool is not one)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"top_k must be an int >= 1, got {k!r}")
    return k


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Knockout, RoundRobin)}
