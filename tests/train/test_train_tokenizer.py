"""The built-in tokenizer: Qwen's added tokens, plain-text reasoning tags, single-token answers."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from c4u_engine.engine.tokenizer import Tokenizer as EngineTokenizer
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.tokenizer_training import (
    ADDED_TOKENS, QWEN_ADDED_TOKENS, REASONING_TOKENS, target_text, train_tokenizer,
)


@pytest.fixture(scope="module")
def tok(tokenizer_file) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_file))


def test_added_tokens_follow_the_bpe_vocabulary_in_qwen_order(tok, tokenizer_file):
    added = json.loads(tokenizer_file.read_text())["added_tokens"]
    assert [(t["content"], t["special"]) for t in added] == list(ADDED_TOKENS)
    ids = [t["id"] for t in added]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert ids[0] == tok.get_vocab_size(with_added_tokens=False)
    for content, _special in QWEN_ADDED_TOKENS:
        assert tok.encode(content, add_special_tokens=False).ids == [tok.token_to_id(content)]


def test_reasoning_tags_are_single_non_special_tokens_kept_by_decode(tok):
    text = target_text("A: clean look. B: busy look. A is better.", "A")
    ids = tok.encode(text, add_special_tokens=False).ids
    for tag in REASONING_TOKENS:
        assert tok.token_to_id(tag) in ids
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == text.removesuffix("<|im_end|>")  # <|im_end|> is special, the tags are not


@pytest.mark.parametrize("letter", ["A", "B"])
def test_answer_letter_is_one_token_after_the_fast_prefix(tok, letter):
    prefix = tok.encode("<think></think><answer>", add_special_tokens=False).ids
    full = tok.encode(f"<think></think><answer>{letter}", add_special_tokens=False).ids
    assert full[: len(prefix)] == prefix and len(full) == len(prefix) + 1
    assert tok.decode(full[-1:]) == letter


def test_engine_tokenizer_accepts_it_and_any_text_round_trips(tiny_train_ckpt):
    engine_tok = EngineTokenizer.from_dir(tiny_train_ckpt)
    text = "Prix: 19,99 € — 限时优惠 🙂 <think>x</think>"
    assert engine_tok.decode(engine_tok.encode(text)) == text
    assert engine_tok.eos_token_ids[0] == engine_tok.im_end_id


def test_domain_text_is_compact(tok, train_data):
    from c4u_engine.data import load_pairs

    record = load_pairs(train_data, "train")[0]
    ids = tok.encode(target_text(record.reasoning, record.label), add_special_tokens=False).ids
    assert len(ids) < len(record.reasoning) / 3  # whole words, not bytes


def test_training_is_deterministic_and_checks_its_size():
    texts = ["Creative A is better. Creative B is busy."] * 5
    assert train_tokenizer(texts, 300).to_str() == train_tokenizer(texts, 300).to_str()
    with pytest.raises(InvalidInputError, match="vocab_size"):
        train_tokenizer(texts, 200)
