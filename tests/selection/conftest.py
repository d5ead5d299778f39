"""Judges for selection tests: a synthetic one (hidden strengths, P(A) = sigmoid(s_A - s_B + position_bias)) and
one reading P(A) from a table."""

from __future__ import annotations

import math
from typing import Collection

import pytest

from c4u_engine.selection import Comparison


class SyntheticJudge:
    """Judges ordered pairs from hidden strengths; records every batch it was given.

    `unparsable` lists ordered pairs whose answer is unreadable. `reasoning` adds a reasoning text (reason mode).
    """

    def __init__(self, strengths: list[float], bias: float = 0.0, unparsable: Collection[tuple[int, int]] = (),
                 reasoning: str | None = None) -> None:
        self.strengths = strengths
        self.bias = bias
        self.unparsable = set(unparsable)
        self.reasoning = reasoning
        self.batches: list[list[tuple[int, int]]] = []

    def prob_a(self, a: int, b: int) -> float:
        return 1.0 / (1.0 + math.exp(-(self.strengths[a] - self.strengths[b] + self.bias)))

    def __call__(self, pairs: list[tuple[int, int]]) -> list[Comparison]:
        self.batches.append(list(pairs))
        out = []
        for a, b in pairs:
            mode = "reason" if self.reasoning is not None else "fast"
            if (a, b) in self.unparsable:
                out.append(Comparison.unparsable(a, b, mode=mode, raw_text="I like both <answer>?</answer>"))
                continue
            p = self.prob_a(a, b)
            text = None if self.reasoning is None else f"{self.reasoning} ({a} vs {b})"
            out.append(Comparison(a, b, "A" if p >= 0.5 else "B", p, reasoning=text, mode=mode))
        return out


class TableJudge:
    """P(A) of each ordered pair from a table: `p_a[(first, second)]`, else 1 - `p_a[(second, first)]` (no
    position bias where only one order is given); a pair in `unparsable` gets an unreadable answer. Records its
    batches."""

    def __init__(self, p_a: dict[tuple[int, int], float], unparsable: Collection[tuple[int, int]] = ()) -> None:
        self.p_a = p_a
        self.unparsable = set(unparsable)
        self.batches: list[list[tuple[int, int]]] = []

    def prob_a(self, a: int, b: int) -> float:
        return self.p_a[(a, b)] if (a, b) in self.p_a else 1.0 - self.p_a[(b, a)]

    def __call__(self, pairs: list[tuple[int, int]]) -> list[Comparison]:
        self.batches.append(list(pairs))
        out = []
        for a, b in pairs:
            if (a, b) in self.unparsable:
                out.append(Comparison.unparsable(a, b, mode="fast", raw_text="?"))
            else:
                p = self.prob_a(a, b)
                out.append(Comparison(a, b, "A" if p >= 0.5 else "B", p))
        return out


@pytest.fixture
def synthetic_judge() -> type[SyntheticJudge]:
    return SyntheticJudge


@pytest.fixture
def table_judge() -> type[TableJudge]:
    return TableJudge
