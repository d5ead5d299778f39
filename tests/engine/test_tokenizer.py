"""Tokenizer: encode/decode equal transformers' AutoTokenizer on the tiny checkpoint; loading errors are typed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from c4u_engine.engine.tokenizer import Tokenizer
from c4u_engine.errors import ModelFormatError

STRINGS = [
    "",
    "Creative A",
    "Which creative is this user more likely to click?",
    "<think>The title matches.</think><answer>A</answer>",
    "<think></think><answer>B</answer>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>",
    "x<|im_end|>y<|endoftext|>z<|video_pad|>",
    "<|im_start|<|im_end|>>  <|not_a_token|>",
    "<tool_call>{\"a\": 1}</tool_call><|fim_prefix|>",
    "héllo wörld, naïve café, Ünïcödé",
    "日本語のテキスト 中文 한국어 emoji 🎉👍🏽 and e\u0301 (combining accent, NFC)",
    "  leading and trailing  ",
    "tabs\tand\t\ttabs\nnew\n\n\nlines\r\nwindows  \n  ",
    "     many spaces      here",
    "numbers 1234567890 3.14159 $19.99 50% -7",
    "punctuation!!! ??? ... --- ___ ''' \"\"\" ;;; ::",
    "it's they're we've I'm you'll he'd IT'S",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_ckpt):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="module")
def tokenizer(tiny_ckpt):
    return Tokenizer.from_dir(tiny_ckpt)


@pytest.mark.parametrize("text", STRINGS)
def test_encode_equals_transformers(tokenizer, hf_tokenizer, text):
    assert tokenizer.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", STRINGS)
@pytest.mark.parametrize("skip", [False, True])
def test_decode_equals_transformers(tokenizer, hf_tokenizer, text, skip):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special_tokens=skip) == hf_tokenizer.decode(ids, skip_special_tokens=skip)
    if not skip:
        assert tokenizer.decode(ids) == text.replace("e\u0301", "\u00e9")  # lossless up to NFC


def test_decode_of_partial_utf8_matches_transformers(tokenizer, hf_tokenizer):
    ids = tokenizer.encode("🎉")
    assert len(ids) > 1  # a 4-byte character is several byte-level tokens here
    for cut in range(1, len(ids)):
        assert tokenizer.decode(ids[:cut]) == hf_tokenizer.decode(ids[:cut])


def test_special_token_ids(tokenizer, hf_tokenizer):
    for name, token in [
        ("image_pad_id", "<|image_pad|>"),
        ("vision_start_id", "<|vision_start|>"),
        ("vision_end_id", "<|vision_end|>"),
        ("im_start_id", "<|im_start|>"),
        ("im_end_id", "<|im_end|>"),
    ]:
        assert getattr(tokenizer, name) == hf_tokenizer.convert_tokens_to_ids(token)
    assert tokenizer.vocab_size == len(hf_tokenizer)
    assert tokenizer.id_to_token(tokenizer.im_end_id) == "<|im_end|>"
    assert tokenizer.id_to_token(10**6) is None


def test_eos_ids_follow_generation_config(tokenizer, tiny_ckpt):
    gen = json.loads((tiny_ckpt / "generation_config.json").read_text())
    assert list(tokenizer.eos_token_ids) == gen["eos_token_id"]
    assert tokenizer.eos_token_ids[0] == tokenizer.im_end_id


def test_eos_fallbacks(tiny_ckpt, tmp_path):
    shutil.copy(tiny_ckpt / "tokenizer.json", tmp_path)
    tok = Tokenizer.from_dir(tmp_path)  # no config at all: <|im_end|>
    assert tok.eos_token_ids == (tok.im_end_id,)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    tok = Tokenizer.from_dir(tmp_path)
    endoftext = tok.token_id("<|endoftext|>")
    assert tok.eos_token_ids == (endoftext,)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": [tok.im_end_id, endoftext]}}))
    assert Tokenizer.from_dir(tmp_path).eos_token_ids == (endoftext, tok.im_end_id)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": tok.im_end_id}))
    assert Tokenizer.from_dir(tmp_path).eos_token_ids == (tok.im_end_id, endoftext)


def test_unknown_token_names_it(tokenizer):
    with pytest.raises(ModelFormatError, match="<\\|nope\\|>"):
        tokenizer.token_id("<|nope|>")


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(ModelFormatError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


@pytest.mark.parametrize("content", ["{ not json", '{"model": {"type": "Nope"}}', ""])
def test_corrupt_tokenizer_json(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(ModelFormatError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


def test_corrupt_side_files_are_named(tiny_ckpt, tmp_path):
    shutil.copy(tiny_ckpt / "tokenizer.json", tmp_path)
    (tmp_path / "generation_config.json").write_text("[1, 2")
    with pytest.raises(ModelFormatError, match="generation_config.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": "x"}')
    with pytest.raises(ModelFormatError, match="generation_config.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 99999}')
    with pytest.raises(ModelFormatError, match="eos token ids"):
        Tokenizer.from_dir(tmp_path)


def test_vision_tokens_must_be_added_tokens(tiny_ckpt, tmp_path):
    data = json.loads((tiny_ckpt / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|image_pad|>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="image_pad"):
        Tokenizer.from_dir(tmp_path)


def test_tiny_checkpoint_tokenizer_is_qwen_shaped(tokenizer, hf_tokenizer):
    assert type(hf_tokenizer).__name__ == "Qwen2Tokenizer"
    assert 400 <= tokenizer.vocab_size <= 600
    for word in ["Creative", " product", " title", " query", "think", "answer"]:
        assert len(tokenizer.encode(word)) <= 3, word  # BPE learned the prompt's words
    # <think>/<answer> are plain text, split by BPE like in Qwen2.5-VL; A and B stay single tokens
    assert len(tokenizer.encode("<think>")) > 1
    assert len(tokenizer.encode("A")) == len(tokenizer.encode("B")) == 1


def test_runtime_modules_import_neither_transformers_nor_torch():
    code = (
        "import sys; import c4u_engine.engine.tokenizer, c4u_engine.engine.chat_template, c4u_engine.engine.messages; "
        "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
