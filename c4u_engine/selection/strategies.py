"""Selection strategies: which matches to play, round by round, and how to rank the candidates afterwards.

A strategy thinks in MATCHES: unordered pairs of candidate ids, written (a, b) with `a` the one to show as
"Creative A" when a match is judged in one order only. `Tournament` turns matches into ordered comparisons (one or
both orders), runs the bookkeeping and settles each match with `PairwiseMatrix` (combined probability; an exact tie
goes to the lower index). A strategy sees the results of a round before it names the next (knockout is adaptive).

Determinism: with `rng=None` everything follows input order. With an `rng` (a seeded `random.Random`) the knockout
bracket is shuffled, and in one-order play each match is shown in a random order, so that the judge's position bias
becomes noise instead of a systematic advantage for low indices.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import ClassVar

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
    """

    name = "knockout"

    def __init__(self, n: int, rng: random.Random | None = None) -> None:
        super().__init__(n, rng)
        self.alive = list(range(n))
        if rng is not None:
            rng.shuffle(self.alive)
        self.round = 0
        self.eliminated_in: dict[int, int] = {}
        self.byes: dict[int, int] = {c: 0 for c in range(n)}
        self.won: dict[int, list[Match]] = {c: [] for c in range(n)}  # (c, beaten opponent), in round order
        self._pending: list[Match] = []

    @property
    def done(self) -> bool:
        return len(self.alive) <= 1 and not self._pending

    def next_matches(self) -> list[Match]:
        if self.done:
            return []
        players = list(self.alive)
        if len(players) % 2:
            fewest = min(self.byes[c] for c in players)
            bye = [c for c in players if self.byes[c] == fewest][-1]
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

    def ranking(self, matrix: PairwiseMatrix) -> list[int]:
        (winner,) = self.alive

        def key(c: int) -> tuple[float, float, int]:
            mean = matrix.mean_prob(c)
            return (-self.eliminated_in[c], -(mean if mean is not None else 0.0), c)

        return [winner] + sorted((c for c in range(self.n) if c != winner), key=key)

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
        wins = matrix.wins()
        return sorted(range(self.n), key=lambda c: (-wins[c], -matrix.summed_prob(c), c))

    def deciding_matches(self, matrix: PairwiseMatrix) -> list[Match]:
        ranking = self.ranking(matrix)
        if len(ranking) < 2:
            return []
        winner, wins = ranking[0], matrix.wins()
        # The runner-up has the most wins after the winner, so it is a contender whenever anyone is.
        contenders = [c for c in ranking[1:] if wins[c] + 1 >= wins[winner] - 1] or [ranking[1]]
        return [(winner, c) for c in contenders]


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Knockout, RoundRobin)}
