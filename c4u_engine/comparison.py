"""One judged ordered pair of creatives: the vocabulary shared by the engine (which produces comparisons) and the
selection layer (which aggregates them). Pure Python, no dependencies beyond errors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from c4u_engine.errors import InvalidInputError

JUDGE_MODES = ("fast", "reason")  # how one comparison is judged; selection modes (hybrid) live in selection.policy

Answer = Literal["A", "B"]
_ANSWERS = ("A", "B", None)


def _check_index(name: str, value: object) -> int:
    # bool is an int subclass; True as a candidate index is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{name} must be a non-negative int candidate index, got {value!r}")
    return value


@dataclass(frozen=True)
class Comparison:
    """One judged ordered pair: candidate `first` shown as "Creative A", `second` as "Creative B".

    `prob_a` is the judge's P(answer == "A") in [0, 1]: from the answer-token logits in fast mode; in reason mode from
    those logits when available, else 1.0 / 0.0 from the parsed answer. `answer` is None when the output could not be
    parsed; such a comparison carries no evidence and counts as 0.5 (see `p_first`), whatever `prob_a` says.
    """

    first: int
    second: int
    answer: Answer | None
    prob_a: float
    reasoning: str | None = None
    mode: str = "fast"
    error: str | None = None
    raw_text: str | None = None

    def __post_init__(self) -> None:
        _check_index("Comparison.first", self.first)
        _check_index("Comparison.second", self.second)
        if self.first == self.second:
            raise InvalidInputError(f"a comparison needs two different candidates, got {self.first} vs itself")
        if self.answer not in _ANSWERS:
            raise InvalidInputError(f"Comparison.answer must be 'A', 'B' or None, got {self.answer!r}")
        try:
            prob = float(self.prob_a)  # accept numpy scalars, store a plain float
        except (TypeError, ValueError):
            raise InvalidInputError(f"Comparison.prob_a must be a number in [0, 1], got {self.prob_a!r}") from None
        if not (math.isfinite(prob) and 0.0 <= prob <= 1.0):
            raise InvalidInputError(f"Comparison.prob_a must be in [0, 1], got {self.prob_a!r}")
        object.__setattr__(self, "prob_a", prob)
        if not isinstance(self.mode, str) or not self.mode:
            raise InvalidInputError(f"Comparison.mode must be a non-empty string, got {self.mode!r}")

    @classmethod
    def unparsable(cls, first: int, second: int, *, mode: str, raw_text: str | None, error: str | None = None,
                   reasoning: str | None = None) -> Comparison:
        """A comparison whose answer could not be read: answer None, prob_a 0.5, `error` says why."""
        if error is None:
            shown = raw_text if raw_text is None or len(raw_text) <= 200 else raw_text[:200] + "..."
            error = f"unparsable answer: {shown!r}"
        return cls(first, second, None, 0.5, reasoning=reasoning, mode=mode, error=error, raw_text=raw_text)

    @property
    def parsed(self) -> bool:
        """True when the judge gave a readable answer."""
        return self.answer is not None

    @property
    def winner(self) -> int | None:
        """The candidate this comparison's answer picked (`first` for "A", `second` for "B"), None if unparsable."""
        if self.answer is None:
            return None
        return self.first if self.answer == "A" else self.second

    @property
    def p_first(self) -> float:
        """P(first beats second) as evidence for aggregation: prob_a, or 0.5 when the answer was unparsable."""
        return self.prob_a if self.answer is not None else 0.5

    def remap(self, ids: Sequence[int]) -> Comparison:
        """The same comparison with `first`/`second` replaced by `ids[first]`/`ids[second]` (e.g. input indices)."""
        return dataclasses.replace(self, first=ids[self.first], second=ids[self.second])

    def to_dict(self) -> dict[str, Any]:
        """All fields, as JSON types."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """Inverse of `to_dict()`; unknown keys are an error (they mean a format mismatch)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown Comparison fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**data)
