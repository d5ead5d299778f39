"""The comparison prompt: how a (profile, creative A, creative B) triple becomes chat messages.

Layout matters for speed. Everything that does not depend on the creatives (system text with the evaluation
protocol, product title, queries) comes first, so it is prefilled once per request; image A comes next, so
[prefix + A] is prefilled once per distinct A; only image B and a short question follow, which is all a comparison
computes on its own. The messages are ordinary transformers chat messages, so any decision can be replayed there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from c4u_engine.errors import InvalidInputError, ModelFormatError
from c4u_engine.profile import Profile

MODES = ("fast", "reason", "hybrid")

DEFAULT_SYSTEM = (
    "You are an expert judge of advertising creatives. Given a product title, a user's high-frequency search "
    "queries and two creatives (Creative A and Creative B), decide which creative this user is more likely to click.\n"
    "Follow this protocol:\n"
    "1. Are the two creatives identical? Are they too similar to judge?\n"
    "2. Otherwise compare A and B on: query match (does the creative reflect what the user searches for), title "
    "match (does it show the product in the title), text in the image (selling points, price, call to action; "
    "legible or cluttered), models and props, layout, product subject (complete, clear, prominent), background "
    "(clean, harmonious with the product).\n"
    "3. Conclude which one the user is more likely to click.\n"
    "Answer in the format <think>your reasoning</think><answer>A</answer> or <think>your reasoning</think>"
    "<answer>B</answer>."
)
DEFAULT_PROFILE = "Product title: {title}\nUser's high-frequency search queries: {queries}{extra}\n"
DEFAULT_QUESTION = "\nWhich creative is this user more likely to click?"


@dataclass(frozen=True)
class PromptTemplate:
    """Wording of the comparison prompt. `profile` is formatted with {title}, {queries}, {extra}.

    fast_prefix: assistant text after which the next token is the answer letter (closes thinking, opens <answer>).
    reason_prefix: assistant text after which the model writes its chain of thought and answer.
    """

    system: str = DEFAULT_SYSTEM
    profile: str = DEFAULT_PROFILE
    label_a: str = "Creative A:"
    label_b: str = "\nCreative B:"
    question: str = DEFAULT_QUESTION
    fast_prefix: str = "<think></think><answer>"
    reason_prefix: str = "<think>"
    answer_a: str = "A"
    answer_b: str = "B"

    @classmethod
    def from_json(cls, path: str | Path) -> "PromptTemplate":
        """Load a checkpoint's own prompt (c4u_prompt.json): any subset of the fields, the rest default."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path}: unreadable prompt template: {exc}") from None
        if not isinstance(data, dict):
            raise ModelFormatError(f"{path}: prompt template must be a JSON object")
        fields = set(cls.__dataclass_fields__)
        unknown = set(data) - fields
        if unknown:
            raise ModelFormatError(f"{path}: unknown prompt template keys {sorted(unknown)}; valid: {sorted(fields)}")
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            raise ModelFormatError(f"{path}: prompt template values must be strings: {bad}")
        return replace(cls(), **data)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, ensure_ascii=False)

    def profile_text(self, profile: Profile) -> str:
        queries = "; ".join(profile.queries) if profile.queries else "(none)"
        extra = f"\nAbout the user: {profile.extra}" if profile.extra else ""
        return self.profile.format(title=profile.title, queries=queries, extra=extra)

    def assistant_prefix(self, mode: str) -> str:
        check_mode(mode)
        return self.fast_prefix if mode == "fast" else self.reason_prefix

    def messages(self, profile: Profile, image_a: object, image_b: object) -> list[dict]:
        """Chat messages (transformers format) for one ordered comparison."""
        content = [
            {"type": "text", "text": self.profile_text(profile) + self.label_a},
            {"type": "image", "image": image_a},
            {"type": "text", "text": self.label_b},
            {"type": "image", "image": image_b},
            {"type": "text", "text": self.question},
        ]
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {"role": "user", "content": content},
        ]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")


def load_prompt_template(model_dir: str | Path) -> PromptTemplate:
    """The checkpoint's own template (c4u_prompt.json) if it ships one, else the default."""
    path = Path(model_dir) / "c4u_prompt.json"
    return PromptTemplate.from_json(path) if path.is_file() else PromptTemplate()
