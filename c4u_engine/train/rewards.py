"""GRPO rewards and group-normalised advantages.

A completion is judged as the engine reads it in reason mode: the reason prefix ("<think>") plus the decoded new
tokens, special tokens skipped (so <|im_end|> disappears, the non-special think/answer tags stay).
- format: 1 when the text is exactly <think>non-empty reasoning</think><answer>A|B</answer> (whitespace around
  the tags allowed, nothing after </answer>), else 0;
- correctness: 1 when the engine's own answer parser (engine.answer.parse_answer) reads the right letter, else 0;
- sections: the fraction of the reference reasoning's protocol sections (query match ... background) that the
  completion writes word for word: the A and B descriptions and the verdict. A process reward: a right answer
  reached through wrongly read creatives earns less than one reached through right ones, which is what makes an
  answer hold when the order of the creatives flips. 0 for a reference with no protocol sections (free-form
  reasoning, as in real data), so there it adds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from c4u_engine.data.reasoning import SECTION_TITLES
from c4u_engine.engine.answer import parse_answer
from c4u_engine.errors import InvalidInputError

_WELL_FORMED = re.compile(r"\s*<think>((?:(?!</?think>|</?answer>).)*)</think>\s*<answer>\s*[AB]\s*</answer>\s*", re.S)


def format_reward(text: str) -> float:
    """1.0 for a well-formed <think>...</think><answer>X</answer> with non-blank reasoning, 0.0 otherwise."""
    match = _WELL_FORMED.fullmatch(text)
    return 1.0 if match and match.group(1).strip() else 0.0


def correctness_reward(text: str, label: str) -> float:
    """1.0 when the answer the engine parses from text is `label`, 0.0 otherwise (unparsable included)."""
    if label not in ("A", "B"):
        raise InvalidInputError(f"label={label!r}; valid values: 'A', 'B'")
    answer, _, _ = parse_answer(text)
    return 1.0 if answer == label else 0.0


_SECTION_NAMES = frozenset(SECTION_TITLES.values())


def _section_lines(reasoning: str) -> dict[str, str]:
    """Protocol section title -> its line ("Layout: A: centered. B: border. A is better.")."""
    lines = {}
    for line in reasoning.splitlines():
        line = line.strip()
        title = line.split(":", 1)[0]
        if title in _SECTION_NAMES and title not in lines:
            lines[title] = line
    return lines


def section_reward(text: str, reference: str) -> float:
    """The fraction of reference's protocol section lines that the thinking in text writes identically."""
    wanted = _section_lines(reference)
    if not wanted:
        return 0.0
    written = _section_lines(text.split("</think>", 1)[0].replace("<think>", ""))
    return sum(written.get(title) == line for title, line in wanted.items()) / len(wanted)


def total_reward(text: str, label: str, format_weight: float = 1.0, correct_weight: float = 1.0) -> float:
    return format_weight * format_reward(text) + correct_weight * correctness_reward(text, label)


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-4) -> np.ndarray:
    """(r - mean of its group) / (std of its group + eps) for rewards laid out group after group.

    A group whose completions all scored the same gets advantage 0 (nothing to prefer)."""
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or r.size % group_size:
        raise InvalidInputError(f"{r.size} rewards do not split into groups of {group_size}")
    groups = r.reshape(-1, group_size)
    centred = groups - groups.mean(axis=1, keepdims=True)
    return (centred / (groups.std(axis=1, keepdims=True) + eps)).reshape(-1)
