"""Selection policies: what a request judges, round by round, and the Selection it ends with.

`SelectionPolicy` drives a tournament in one judge mode ("fast" or "reason"), or the hybrid policy: the tournament
in fast mode, then one more round that re-judges with chain-of-thought reasoning the comparisons that decided the
winner. The engine runs any policy through its plan protocol (engine/request.py's Plan): `pending_round()` looks at
the round to judge now ((ordered pairs, judge mode), or None when done; asking again changes nothing),
`record(comparisons)` hands in that round's results and moves on, `result(stats)` is what the request resolves to;
the engine batches the rounds with other requests'. `PairPolicy` is one ordered pair (Engine.compare). Pure Python,
like the rest of the selection layer.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from c4u_engine.comparison import JUDGE_MODES, Comparison
from c4u_engine.errors import InvalidInputError
from c4u_engine.selection.orders import ORDERS, resolve_orders
from c4u_engine.selection.results import Selection
from c4u_engine.selection.strategies import STRATEGIES, check_top_k
from c4u_engine.selection.tournament import Tournament

__all__ = ["MODES", "ORDERS", "STRATEGY_NAMES", "PairPolicy", "SelectionPolicy", "check_mode", "check_strategy",
           "check_top_k", "resolve_orders"]

MODES = (*JUDGE_MODES, "hybrid")
STRATEGY_NAMES = tuple(STRATEGIES)
Pair = tuple[int, int]


def check_mode(mode: Any, allowed: Sequence[str] = MODES) -> str:
    if mode not in allowed:
        raise InvalidInputError(f"unknown mode {mode!r}; valid modes: {', '.join(allowed)}")
    return mode


def check_strategy(strategy: Any) -> str:
    if strategy not in STRATEGY_NAMES:
        raise InvalidInputError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
    return strategy


class SelectionPolicy:
    """One selection over candidate ids 0..n-1 in `mode` (fast | reason | hybrid) with `strategy`, `orders` and
    `top_k` (see `Tournament`).

    inputs, duplicates, rejected, flagged, stats: what `result` reports beside the tournament (see `selection`):
    candidate id k is input `inputs[k]` (default: k)."""

    def __init__(self, n: int, strategy: str = "knockout", both_orders: bool | None = None, mode: str = "fast",
                 seed: int | None = None, *, orders: str | None = None, top_k: int | None = None,
                 inputs: Sequence[int] | None = None,
                 duplicates: Mapping[int, int] | None = None, rejected: Mapping[int, str] | None = None,
                 flagged: Mapping[int, str] | None = None, stats: Mapping[str, Any] | None = None) -> None:
        self.mode = check_mode(mode)
        self.judge_modes = frozenset(JUDGE_MODES) if mode == "hybrid" else frozenset({mode})
        self._inputs = list(range(n)) if inputs is None else list(inputs)
        self._duplicates, self._rejected = dict(duplicates or {}), dict(rejected or {})
        self._flagged, self._stats = dict(flagged or {}), dict(stats or {})
        self.tournament = Tournament(n, check_strategy(strategy), both_orders, seed, orders=orders, top_k=top_k)
        self._judge_mode = "fast" if mode == "hybrid" else mode
        self._reasoning: list[Pair] | None = None  # hybrid: the deciding pairs, once asked for
        self.reasoned: list[Comparison] = []

    def pending_round(self) -> tuple[list[Pair], str] | None:
        """The round to judge now, or None when done; a look (the same until `record`)."""
        pairs = self.tournament.pending_round()
        if pairs:
            return pairs, self._judge_mode
        if self.mode != "hybrid" or self.reasoned:
            return None
        if self._reasoning is None:
            self._reasoning = self.tournament.deciding_pairs()
        return (list(self._reasoning), "reason") if self._reasoning else None

    def record(self, comparisons: Sequence[Comparison]) -> None:
        """The judged comparisons of the pending round; the policy moves on."""
        if not self.tournament.done:
            self.tournament.record(comparisons)
            return
        wanted = sorted(self._reasoning or [])
        if sorted((c.first, c.second) for c in comparisons) != wanted:
            raise InvalidInputError(f"the reasoning round's results do not match its pairs {wanted}")
        self.reasoned = list(comparisons)

    def stats(self) -> dict[str, Any]:
        stats = self.tournament.stats()
        if self.mode == "hybrid":
            fast = {(c.first, c.second): c for c in self.tournament.comparisons}
            stats["hybrid_reasoned"] = len(self.reasoned)
            stats["hybrid_disagreements"] = sum(
                1 for c in self.reasoned if c.answer is not None and c.answer != fast[(c.first, c.second)].answer)
        stats["mode"] = self.mode
        return stats

    def result(self, stats: Mapping[str, Any]) -> Selection:
        """The finished Selection, with the engine's `stats` and those given at construction."""
        return self.selection(self._inputs, duplicates=self._duplicates, rejected=self._rejected,
                              flagged=self._flagged, stats={**stats, **self._stats})

    def selection(self, input_indices: Sequence[int], *, duplicates: Mapping[int, int] | None = None,
                  rejected: Mapping[int, str] | None = None, stats: Mapping[str, Any] | None = None,
                  flagged: Mapping[int, str] | None = None) -> Selection:
        """The finished selection in input indices (candidate id k is input `input_indices[k]`); duplicates
        (input -> the input it repeats) rank right after their original with its score; rejected inputs are listed."""
        outcome = self.tournament.outcome()
        ids = list(input_indices)
        dups_of: dict[int, list[int]] = {}
        for d, orig in (duplicates or {}).items():
            dups_of.setdefault(orig, []).append(d)
        ranking, scores = [], {}
        for local in outcome.ranking:
            orig = ids[local]
            for idx in [orig, *sorted(dups_of.get(orig, []))]:
                ranking.append(idx)
                scores[idx] = outcome.scores[local]
        comparisons = list(outcome.comparisons) + self.reasoned
        return Selection(
            winner=ids[outcome.winner],
            ranking=ranking,
            scores=scores,
            comparisons=[c.remap(ids) for c in comparisons],
            rejected=dict(sorted((rejected or {}).items())),
            duplicates=dict(duplicates or {}),
            stats={**self.stats(), **(stats or {})},
            deciding_pairs=[(ids[a], ids[b]) for a, b in outcome.deciding_pairs],
            flagged=dict(sorted((flagged or {}).items())),
        )


class PairPolicy:
    """One ordered comparison (0 shown as Creative A, 1 as B) in a judge mode."""

    def __init__(self, mode: str = "fast") -> None:
        self.mode = check_mode(mode, JUDGE_MODES)
        self.judge_modes = frozenset({self.mode})
        self.comparison: Comparison | None = None

    def pending_round(self) -> tuple[list[Pair], str] | None:
        return None if self.comparison is not None else ([(0, 1)], self.mode)

    def record(self, comparisons: Sequence[Comparison]) -> None:
        (self.comparison,) = comparisons

    def result(self, stats: Mapping[str, Any]) -> Comparison | None:
        return self.comparison
