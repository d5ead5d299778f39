"""The judge's answer: its tokens (AnswerTokens, resolved once per engine) and reading it from the two answer-token
logits (fast) or from generated text (reason)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from c4u_engine.errors import ModelFormatError

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


def empty_thinking_ids(tokenizer, reason_prefix: str) -> tuple[int, ...]:
    """The token that closes the thinking right after reason_prefix (empty when "</think>" merges with it).

    Reason mode bans it as the first new token: a model taught both a chain-of-thought and a direct-answer form
    (ours is, for fast mode) must reason when asked to."""
    base = tokenizer.encode(reason_prefix)
    closed = tokenizer.encode(reason_prefix + "</think>")
    if closed[: len(base)] != base or len(closed) <= len(base):
        return ()
    return (closed[len(base)],)


@dataclass(frozen=True)
class AnswerTokens:
    """How answers look in tokens for one checkpoint and prompt template; computed once when an engine loads.

    ids: the token ids of the answer letters (A, B) as the model emits them right after `fast_prefix`.
    fast_prefix: the template's fast-mode assistant prefix, cut so that it ends exactly where the answer token
        starts (byte-level BPE may merge the prefix's last characters with the letter: Qwen's split rule makes ">A"
        one piece).
    answer_cue: the text after which a reasoning row's next logits are its answer logits (P(A) is read there).
    empty_thinking: token ids banned as a reasoning row's first token (see empty_thinking_ids).
    """

    ids: tuple[int, int]
    fast_prefix: str
    answer_cue: str
    empty_thinking: tuple[int, ...]

    @classmethod
    def resolve(cls, tokenizer, render_user_turn, template) -> "AnswerTokens":
        """render_user_turn(assistant_prefix) -> the rendered prompt text of any user turn plus that prefix."""
        base = render_user_turn(template.fast_prefix)
        ta, tb = tokenizer.encode(base + template.answer_a), tokenizer.encode(base + template.answer_b)
        common = 0
        while common < min(len(ta), len(tb)) and ta[common] == tb[common]:
            common += 1
        if len(ta) != common + 1 or len(tb) != common + 1:
            raise ModelFormatError(
                f"answers {template.answer_a!r}/{template.answer_b!r} are not single tokens after the prefix "
                f"{template.fast_prefix!r} with this tokenizer; fast mode needs single-token answers")
        merged = tokenizer.decode([ta[-1]])  # e.g. "A", or ">A" when the prefix's ">" merged into it
        letter = template.answer_a
        if not merged.endswith(letter) or not template.fast_prefix.endswith(merged[: -len(letter)]):
            raise ModelFormatError(f"cannot align answer token {merged!r} with the prefix {template.fast_prefix!r}")
        cut = len(merged) - len(template.answer_a)
        fast_prefix = template.fast_prefix[: len(template.fast_prefix) - cut]
        cue = fast_prefix.rsplit("</think>", 1)[-1] or fast_prefix
        return cls((ta[-1], tb[-1]), fast_prefix, cue, empty_thinking_ids(tokenizer, template.reason_prefix))

    def assistant_prefix(self, template, mode: str) -> str:
        """What the assistant turn starts with in `mode` ("fast": up to the answer token; "reason": the template's)."""
        return self.fast_prefix if mode == "fast" else template.assistant_prefix(mode)
