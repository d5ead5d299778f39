"""Text <-> token ids for a Qwen2.5-VL checkpoint, from its tokenizer.json, without transformers.

The `tokenizers` library runs the checkpoint's own pipeline (NFC, Qwen's split regex, byte-level BPE, added tokens),
which is what transformers' Qwen2Tokenizer builds too, so `encode` equals `tokenizer(text, add_special_tokens=False)`
and `decode` equals `tokenizer.decode(ids)`. Special tokens written in the text (<|im_start|>, <|image_pad|>, ...) map
to their own ids, as they do in transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tokenizers

from c4u_engine.errors import ModelFormatError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"

# Tokens the engine writes into prompts: each must exist and encode to exactly itself.
REQUIRED_TOKENS = (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD)


def read_json_object(path: Path) -> dict | None:
    """Parse a checkpoint's JSON file: None when missing, a ModelFormatError naming it when not a JSON object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ..., "__type": "AddedToken"}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    """A checkpoint's tokenizer: encode/decode plus the ids of the tokens the engine needs."""

    def __init__(self, backend: tokenizers.Tokenizer, eos_token_ids: Sequence[int], *, source: str = "<memory>"):
        self._backend = backend
        self._source = source
        size = self.vocab_size
        for token in REQUIRED_TOKENS:
            token_id = self.token_id(token)
            if self.encode(token) != [token_id]:
                raise ModelFormatError(f"{source}: {token} is not an added token (it encodes to {self.encode(token)})")
        bad = [i for i in eos_token_ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < size]
        if bad or not eos_token_ids:
            raise ModelFormatError(f"{source}: eos token ids {list(eos_token_ids)} must be ids in [0, {size})")
        self._eos_token_ids = tuple(dict.fromkeys(eos_token_ids))

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Tokenizer":
        """Load tokenizer.json; stop tokens from generation_config.json, tokenizer_config.json and config.json."""
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelFormatError(f"{path}: missing (the checkpoint needs a tokenizers-format tokenizer.json)")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust loader raises a bare Exception for every kind of corruption
            raise ModelFormatError(f"{path}: not a valid tokenizer.json ({exc})") from None
        eos_ids = _eos_token_ids(model_dir, backend)
        return cls(backend, eos_ids, source=str(model_dir))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added (special tokens written in the text are recognized)."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`, as transformers' decode gives it (invalid UTF-8 byte runs become U+FFFD)."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int:
        """The id of one token string (vocabulary entry or added token)."""
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise ModelFormatError(f"{self._source}: the tokenizer has no token {token!r}")
        return token_id

    def id_to_token(self, token_id: int) -> str | None:
        """The token string of an id, None when the id is outside the tokenizer (e.g. embedding padding rows)."""
        return self._backend.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included (the embedding may have more rows)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def image_pad_id(self) -> int:
        return self.token_id(IMAGE_PAD)

    @property
    def vision_start_id(self) -> int:
        return self.token_id(VISION_START)

    @property
    def vision_end_id(self) -> int:
        return self.token_id(VISION_END)

    @property
    def im_start_id(self) -> int:
        return self.token_id(IM_START)

    @property
    def im_end_id(self) -> int:
        return self.token_id(IM_END)

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Strings of the added special tokens (<|im_start|>, <|image_pad|>, ...): user text must not carry them."""
        decoder = self._backend.get_added_tokens_decoder()
        return tuple(t.content for t in decoder.values() if t.special)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Ids that end generation, in the order the checkpoint lists them."""
        return self._eos_token_ids


def _eos_token_ids(model_dir: Path, backend: tokenizers.Tokenizer) -> list[int]:
    """generation_config.json's eos_token_id, else tokenizer_config.json's eos_token, else <|im_end|>; plus any
    eos ids config.json lists (Qwen's config names <|endoftext|> there while chat turns end with <|im_end|>)."""

    def as_id_list(value: Any, file: Path) -> list[int]:
        ids = value if isinstance(value, list) else [value]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ModelFormatError(f"{file}: eos_token_id must be an int or a list of ints, got {value!r}")
        return ids

    def by_name(token: str, file: Path) -> int:
        token_id = backend.token_to_id(token)
        if token_id is None:
            raise ModelFormatError(f"{file}: eos token {token!r} is not in tokenizer.json")
        return token_id

    gen_path = model_dir / "generation_config.json"
    gen = read_json_object(gen_path) or {}
    tok_path = model_dir / "tokenizer_config.json"
    tok = read_json_object(tok_path) or {}
    if gen.get("eos_token_id") is not None:
        ids = as_id_list(gen["eos_token_id"], gen_path)
    elif token_content(tok.get("eos_token")) is not None:
        ids = [by_name(token_content(tok["eos_token"]), tok_path)]
    else:
        ids = [by_name(IM_END, model_dir / "tokenizer.json")]

    cfg_path = model_dir / "config.json"
    cfg = read_json_object(cfg_path) or {}
    text_cfg = cfg.get("text_config")
    for section in (cfg, text_cfg if isinstance(text_cfg, dict) else {}):
        if section.get("eos_token_id") is not None:
            ids += as_id_list(section["eos_token_id"], cfg_path)
    return list(dict.fromkeys(ids))
