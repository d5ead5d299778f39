"""Reading the judge's answer: from the two answer-token logits (fast) or from generated text (reason)."""

from __future__ import annotations

import re

import numpy as np

_ANSWER = re.compile(r"<answer>\s*([AB])\s*</answer>", re.S)
_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def prob_a_from_logits(logits: np.ndarray, token_a: int, token_b: int) -> float:
    """Softmax over the two answer tokens' logits: P(A)."""
    a, b = float(logits[token_a]), float(logits[token_b])
    m = max(a, b)
    ea, eb = np.exp(a - m), np.exp(b - m)
    return float(ea / (ea + eb))


def parse_answer(text: str) -> tuple[str | None, str | None, str | None]:
    """(answer "A"/"B" or None, reasoning inside <think> or None, error or None) from a full assistant text.

    An unparsable answer is reported, never guessed."""
    think = _THINK.search(text)
    reasoning = think.group(1).strip() if think else None
    found = _ANSWER.findall(text)
    if not found:
        return None, reasoning, f"no <answer>A</answer> or <answer>B</answer> in the output: {text[-200:]!r}"
    if len(set(found)) > 1:
        return None, reasoning, f"conflicting answers {found} in the output"
    return found[0], reasoning, None
