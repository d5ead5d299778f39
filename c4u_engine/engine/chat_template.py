"""A checkpoint's chat template, rendered with jinja2 exactly as transformers' apply_chat_template(tokenize=False).

Mirrors transformers/utils/chat_template_utils.py: an ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension and {% generation %} blocks, a `tojson` that does not escape HTML,
`raise_exception`, `strftime_now`, a plain `dict` and an underscore-refusing `namespace`; messages with None values
dropped and every value rebuilt from plain JSON types (images become "<Image>"-style placeholders); the tokenizer's
named special tokens (bos_token, eos_token, ...) passed as template variables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from c4u_engine.engine.tokenizer import read_json_object, token_content
from c4u_engine.errors import InvalidInputError, ModelFormatError

# The template Qwen/Qwen2.5-VL-*-Instruct ship in chat_template.json (and tokenizer_config.json).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# transformers' SPECIAL_TOKENS_ATTRIBUTES: the named tokens every template sees as variables.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Qwen2Tokenizer's constructor defaults, in force when tokenizer_config.json leaves a name out.
_QWEN2_TOKEN_DEFAULTS = {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplate:
    """A compiled chat template plus the special-token variables it is rendered with."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None, *, origin: str = "<string>"):
        if not isinstance(source, str) or not source:
            raise ModelFormatError(f"{origin}: the chat template must be a non-empty string")
        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        try:
            self._compiled = _compile(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ModelFormatError(f"{origin}: chat template syntax error, line {exc.lineno}: {exc.message}") from None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ChatTemplate":
        """Template from chat_template.jinja, else chat_template.json, else tokenizer_config.json's chat_template."""
        model_dir = Path(model_dir)
        tok_path = model_dir / "tokenizer_config.json"
        tok_cfg = read_json_object(tok_path) or {}
        special = _special_tokens(tok_cfg)
        jinja_path = model_dir / "chat_template.jinja"
        if jinja_path.is_file():
            try:
                return cls(jinja_path.read_text(encoding="utf-8"), special, origin=str(jinja_path))
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelFormatError(f"{jinja_path}: unreadable ({exc})") from None
        json_path = model_dir / "chat_template.json"
        json_cfg = read_json_object(json_path)
        if json_cfg is not None:
            return cls(_pick_template(json_cfg.get("chat_template"), json_path), special, origin=str(json_path))
        if tok_cfg.get("chat_template") is not None:
            return cls(_pick_template(tok_cfg["chat_template"], tok_path), special, origin=str(tok_path))
        raise ModelFormatError(
            f"{model_dir}: no chat template (looked for chat_template.jinja, chat_template.json and "
            "a chat_template entry in tokenizer_config.json)"
        )

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True, **variables: Any
    ) -> str:
        """The prompt text for `messages` (transformers' message format). Extra `variables` reach the template
        (e.g. add_vision_id=True) and override the special-token ones, as in transformers."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise InvalidInputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        chat = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"messages[{index}] must be a dict, got {type(message).__name__}")
            chat.append(_plain({k: v for k, v in message.items() if v is not None}))
        chat = [_alias_reasoning(message) for message in chat]
        template_vars = _plain({**self.special_tokens, **variables})
        try:
            return self._compiled.render(
                messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **template_vars
            )
        except jinja2.TemplateError as exc:
            raise InvalidInputError(f"chat template ({self.origin}) rejected the messages: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError) as exc:
            raise InvalidInputError(
                f"chat template ({self.origin}) failed on the messages: {type(exc).__name__}: {exc}"
            ) from None


def _pick_template(value: Any, path: Path) -> str:
    """A chat_template entry: a string, or a list of {"name", "template"} from which "default" is taken."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        names = sorted(map(str, named))
        raise ModelFormatError(f"{path}: chat_template list has no 'default' template (names: {names})")
    raise ModelFormatError(f"{path}: chat_template must be a string or a list of named templates")


def _special_tokens(tok_cfg: Mapping[str, Any]) -> dict[str, str]:
    """The named special tokens transformers passes to templates, read from tokenizer_config.json."""
    is_qwen2 = tok_cfg.get("tokenizer_class") in ("Qwen2Tokenizer", "Qwen2TokenizerFast")
    defaults = _QWEN2_TOKEN_DEFAULTS if is_qwen2 else {}
    tokens = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = token_content(tok_cfg[name]) if name in tok_cfg else defaults.get(name)
        if value is not None:
            tokens[name] = value
    return tokens


def _alias_reasoning(message: dict) -> dict:
    """transformers fills `reasoning_content` (and `thinking`) from whichever reasoning field a message has."""
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _plain(value: Any) -> Any:
    """Rebuild `value` from plain JSON types; anything else (images, arrays, bytes) becomes "<TypeName>".

    The sandbox would otherwise expose such objects' methods to the template; transformers does the same."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return _plain(value.item())  # numpy scalars: np.bool_(False) must stay falsy
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


class _GenerationBlock(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} (assistant-mask markers): rendered as their body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    """`dict` for templates without attribute access to the type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja's namespace, refusing underscore-prefixed attributes (no path to CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # jinja's own tojson escapes HTML characters; transformers' (and so every template's expectation) does not
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)
