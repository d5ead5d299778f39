"""What a selection produces: the final `Selection` (and, re-exported from c4u_engine.comparison, one judged
`Comparison`).

Both are plain frozen dataclasses with `to_dict()` / `from_dict()`. `to_dict()` returns only JSON types (dict keys are
strings: JSON has no integer keys), so `json.loads(json.dumps(x.to_dict())) == x.to_dict()` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from c4u_engine.comparison import Comparison
from c4u_engine.errors import InvalidInputError

__all__ = ["Comparison", "Selection"]


def _jsonable(value: Any) -> Any:
    """A copy of `value` made of JSON types only (stats are free-form and may hold tuples or numpy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return str(value)


@dataclass(frozen=True)
class Selection:
    """The answer to `select()`. All indices are positions in the caller's input list of images.

    `ranking` holds the judged candidates, best first; a duplicate (`duplicates[d]` = the input it repeats) may be
    ranked too, beside its original with the same score, or left out; rejected inputs are never ranked. `flagged`
    holds ranked inputs that usability screening was unsure of (input -> why). `scores[i]` is i's mean probability
    of beating the opponents it was compared with (`record(i)` says how many it met and beat). `deciding_pairs`
    are the ordered (first, second) pairs that decided the winner (see `Tournament.deciding_pairs`); `explanation`
    quotes their reasoning. `stats` is free-form (engine counters and timings, tournament counters).
    """

    winner: int
    ranking: list[int]
    scores: dict[int, float]
    comparisons: list[Comparison] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    duplicates: dict[int, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    deciding_pairs: list[tuple[int, int]] = field(default_factory=list)
    flagged: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ranking:
            raise InvalidInputError("a Selection needs at least one ranked candidate")
        if len(set(self.ranking)) != len(self.ranking):
            raise InvalidInputError(f"Selection.ranking repeats a candidate: {self.ranking}")
        if self.winner != self.ranking[0]:
            raise InvalidInputError(f"Selection.winner {self.winner} is not ranking[0] ({self.ranking[0]})")
        ranked = set(self.ranking)
        overlap = ranked & set(self.rejected)
        if overlap:
            raise InvalidInputError(f"inputs {sorted(overlap)} are both ranked and in Selection.rejected")
        orphans = {d: o for d, o in self.duplicates.items() if o not in ranked or d == o}
        if orphans:
            raise InvalidInputError(f"Selection.duplicates {orphans} point to inputs that are not ranked originals")
        missing = ranked - set(self.scores)
        if missing:
            raise InvalidInputError(f"Selection.scores has no score for ranked candidates {sorted(missing)}")

    @property
    def deciding_comparisons(self) -> list[Comparison]:
        """The comparisons whose ordered pair is in `deciding_pairs` (all modes), in the order they were run."""
        wanted = set(map(tuple, self.deciding_pairs))
        return [c for c in self.comparisons if (c.first, c.second) in wanted]

    def record(self, i: int) -> tuple[int, int]:
        """(opponents beaten, opponents met) of ranked input i, both orders of a pair counting as one meeting; a
        duplicate has its original's record."""
        from c4u_engine.selection.aggregation import PairwiseMatrix  # aggregation imports this module

        i = self.duplicates.get(i, i)
        ids = sorted({c.first for c in self.comparisons} | {c.second for c in self.comparisons} | {i})
        matrix = PairwiseMatrix(ids, self.comparisons)
        return matrix.wins()[i], len(matrix.opponents(i))

    def score_label(self, i: int) -> str:
        """What input i's score is, in words: e.g. "won 3 of 3, mean P 0.94" (P: the judge's probability that i
        beats an opponent it met, averaged over them)."""
        won, met = self.record(i)
        return f"won {won} of {met}, mean P {self.scores[i]:.2f}"

    @property
    def explanation_hint(self) -> str | None:
        """None when there is an explanation; else how to get one (a fast selection reads answer probabilities
        only: no reasoning is generated)."""
        if self.explanation:
            return None
        return ('no explanation: fast mode judges by answer probabilities only; mode="hybrid" (the deciding '
                'comparisons re-judged with reasoning) or mode="reason" gives one (c4u select --mode hybrid)')

    @property
    def explanation(self) -> str | None:
        """The judge's reasoning in the comparisons that decided the winner, or None when none has reasoning."""
        parts = []
        for c in self.deciding_comparisons:
            if c.reasoning and c.reasoning.strip():
                verdict = f"picked {c.winner}" if c.winner is not None else "no readable answer"
                parts.append(f"[{c.first} as A vs {c.second} as B: {verdict}] {c.reasoning.strip()}")
        return "\n\n".join(parts) if parts else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; integer dict keys become strings, pairs become 2-lists."""
        return {
            "winner": self.winner,
            "ranking": list(self.ranking),
            "scores": {str(k): float(v) for k, v in self.scores.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "duplicates": {str(k): v for k, v in self.duplicates.items()},
            "stats": _jsonable(self.stats),
            "deciding_pairs": [[a, b] for a, b in self.deciding_pairs],
            "flagged": {str(k): v for k, v in self.flagged.items()},
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """Inverse of `to_dict()` (the derived `explanation` is ignored)."""
        try:
            return cls(
                winner=int(data["winner"]),
                ranking=[int(i) for i in data["ranking"]],
                scores={int(k): float(v) for k, v in data["scores"].items()},
                comparisons=[Comparison.from_dict(c) for c in data.get("comparisons", [])],
                rejected={int(k): str(v) for k, v in data.get("rejected", {}).items()},
                duplicates={int(k): int(v) for k, v in data.get("duplicates", {}).items()},
                stats=dict(data.get("stats", {})),
                deciding_pairs=[(int(a), int(b)) for a, b in data.get("deciding_pairs", [])],
                flagged={int(k): str(v) for k, v in data.get("flagged", {}).items()},
            )
        except KeyError as exc:
            raise InvalidInputError(f"Selection dict lacks required key {exc.args[0]!r}") from None

    def summary(self, names: Sequence[str] | None = None) -> str:
        """A few readable lines: winner, ranking with what each score means, rejected, flagged, duplicates, counters,
        explanation (or how to get one). names: what to call input i (e.g. its file), else "#i"."""
        def name(i: int) -> str:
            return f"{names[i]} (#{i})" if names is not None else f"#{i}"

        lines = [f"winner: {name(self.winner)} ({self.score_label(self.winner)})"]
        lines.append("ranking, best first (won: opponents beaten of those met; mean P: the judge's probability of "
                     "beating them, averaged):")
        lines.extend(f"  {r + 1}. {name(i)}: {self.score_label(i)}" for r, i in enumerate(self.ranking))
        if self.rejected:
            lines.append("rejected: " + "; ".join(f"{name(i)}: {why}" for i, why in sorted(self.rejected.items())))
        if self.flagged:
            lines.append("flagged by screening (kept): " + "; ".join(f"{name(i)}: {why}"
                                                                      for i, why in sorted(self.flagged.items())))
        if self.duplicates:
            lines.append("duplicates: " + ", ".join(f"{name(i)} = {name(of)}"
                                                    for i, of in sorted(self.duplicates.items())))
        unparsable = sum(1 for c in self.comparisons if not c.parsed)
        counters = f"comparisons: {len(self.comparisons)}"
        if unparsable:
            counters += f", unparsable: {unparsable}"
        if "inconsistent_orders" in self.stats:
            counters += f", inconsistent orders: {self.stats['inconsistent_orders']}"
        if self.stats.get("comparisons_saved"):
            counters += f", second orders not played: {self.stats['comparisons_saved']}"
        lines.append(counters)
        if self.stats.get("top_k") and self.stats.get("strategy") == "knockout":
            lines.append(f"top {self.stats['top_k']}: ordered by a round robin among them; the rest as the knockout "
                         "left them")
        lines.append("why: " + (self.explanation or self.explanation_hint))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
