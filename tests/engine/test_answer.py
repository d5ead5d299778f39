"""Reading answers (parse_answer, prob_a_from_logits), AnswerTokens on the tiny tokenizer, and sampling."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.engine.answer import AnswerTokens, parse_answer, prob_a_from_logits
from c4u_engine.engine.prompt import PROMPT_PRESETS
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.errors import InvalidInputError, ModelFormatError


@pytest.mark.parametrize("text, answer, reasoning", [
    ("<think>A is cleaner.</think><answer>A</answer>", "A", "A is cleaner."),
    ("<think>\n B shows the price \n</think>\n<answer> B </answer>", "B", "B shows the price"),
    ("<answer>B</answer>", "B", None),
    ("<think>x</think><answer>A</answer> trailing text <answer>A</answer>", "A", "x"),  # repeated, consistent
])
def test_parse_answer_reads_the_answer(text, answer, reasoning):
    assert parse_answer(text) == (answer, reasoning, None)


@pytest.mark.parametrize("text, error", [
    ("<think>B is better</think>", "no <answer>"),
    ("<think>x</think><answer>C</answer>", "no <answer>"),
    ("<answer>A</answer><answer>B</answer>", "conflicting answers"),
    ("", "no <answer>"),
    ("<think>unfinished", "no <answer>"),
])
def test_parse_answer_reports_instead_of_guessing(text, error):
    answer, _, err = parse_answer(text)
    assert answer is None and error in err


def test_prob_a_is_the_softmax_of_the_two_answer_logits():
    logits = np.zeros(8, np.float32)
    logits[3], logits[5] = 2.0, 0.5
    assert prob_a_from_logits(logits, 3, 5) == pytest.approx(1 / (1 + np.exp(-1.5)))
    assert prob_a_from_logits(logits, 5, 3) == pytest.approx(1 / (1 + np.exp(1.5)))
    big = np.array([1000.0, -1000.0])
    assert prob_a_from_logits(big, 0, 1) == 1.0 and prob_a_from_logits(big, 1, 0) == 0.0  # no overflow


def test_answer_tokens_are_aligned_with_the_prefix(tiny_ckpt):
    from c4u_engine.engine.chat_template import ChatTemplate
    from c4u_engine.engine.tokenizer import Tokenizer

    tok, chat = Tokenizer.from_dir(tiny_ckpt), ChatTemplate.from_dir(tiny_ckpt)

    def render(prefix: str) -> str:
        return chat.render([{"role": "user", "content": "x"}]) + prefix

    answer = AnswerTokens.resolve(tok, render, PROMPT_PRESETS["c4u"])
    base = render(answer.fast_prefix)
    # prompt + the answer token is exactly the tokenization of the text with the letter
    for letter, token in zip("AB", answer.ids):
        assert tok.encode(base) + [token] == tok.encode(base + letter)
    assert PROMPT_PRESETS["c4u"].fast_prefix.startswith(answer.fast_prefix)
    assert answer.assistant_prefix(PROMPT_PRESETS["c4u"], "reason") == "<think>"
    bad = PROMPT_PRESETS["c4u"].__class__(answer_a="Alpha", answer_b="Alpine")
    with pytest.raises(ModelFormatError, match="single tokens"):
        AnswerTokens.resolve(tok, render, bad)


def test_greedy_sampling_is_argmax():
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 4.9, 0.0]], np.float32)
    assert Sampler(SamplingParams())(logits).tolist() == [1, 0]


def test_top_k_one_is_greedy_and_seeds_reproduce():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 50)).astype(np.float32)
    k1 = Sampler(SamplingParams(do_sample=True, top_k=1, seed=3))(logits)
    assert k1.tolist() == logits.argmax(-1).tolist()
    a = Sampler(SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, seed=5))
    b = Sampler(SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, seed=5))
    assert a(logits).tolist() == b(logits).tolist()


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([[0.6, 0.3, 0.05, 0.05]], np.float64)).astype(np.float32)
    sampler = Sampler(SamplingParams(do_sample=True, top_p=0.8, seed=0))
    draws = {int(sampler(logits)[0]) for _ in range(300)}
    assert draws == {0, 1}  # 0.6 + 0.3 reach 0.8; the tail is never drawn


def test_sampling_frequencies_follow_the_temperature():
    logits = np.log(np.array([[0.75, 0.25]])).astype(np.float32)
    draws = Sampler(SamplingParams(do_sample=True, seed=1))(np.repeat(logits, 4000, axis=0))
    assert abs((draws == 0).mean() - 0.75) < 0.03
    hot = Sampler(SamplingParams(do_sample=True, temperature=100.0, seed=1))(np.repeat(logits, 4000, axis=0))
    assert abs((hot == 0).mean() - 0.5) < 0.03


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1)])
def test_bad_sampling_params_are_refused(bad):
    with pytest.raises(InvalidInputError):
        SamplingParams(**bad)
