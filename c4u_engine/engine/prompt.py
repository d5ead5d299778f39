"""The comparison prompt: how a (profile, creative A, creative B) triple becomes chat messages.

Layout matters for speed. Everything that does not depend on the creatives (system text with the evaluation
protocol, product title, queries) comes first, so it is prefilled once per request; image A comes next, so
[prefix + A] is prefilled once per distinct A; only image B and a short question follow, which is all a comparison
computes on its own. The messages are ordinary transformers chat messages, so any decision can be replayed there.

Presets (PROMPT_PRESETS): "c4u" (the layout above, the default) and "creative4u_paper", the Creative4U paper's own
layout (no system turn; queries and title, then both creatives, then the evaluation protocol and output format after
the images). A checkpoint trained on the paper's layout must be prompted that way (c4u_prompt.json:
{"preset": "creative4u_paper"}); it still shares [prefix] and [prefix + A], but every comparison then computes the
protocol after image B itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from c4u_engine.comparison import JUDGE_MODES
from c4u_engine.errors import InvalidInputError, ModelFormatError
from c4u_engine.profile import Profile

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

PAPER_PROTOCOL = (
    "Evaluation protocol: first decide whether the two creatives are identical or too similar to judge. Otherwise "
    "compare them on query match, title match, text (selling points, price, call to action), models and props, "
    "layout, product subject and background, then decide which creative the user is more likely to click.\n"
    "Output format: <think>your reasoning</think><answer>A</answer> or <think>your reasoning</think>"
    "<answer>B</answer>."
)


@dataclass(frozen=True)
class PromptTemplate:
    """Wording of the comparison prompt. `profile` is formatted with {title}, {queries}, {extra}; an empty `system`
    means no system turn (the chat template then adds its own default, as in training with transformers).

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
        preset = data.pop("preset", "c4u")
        if not isinstance(preset, str) or preset not in PROMPT_PRESETS:
            raise ModelFormatError(f"{path}: unknown prompt preset {preset!r}; valid: {sorted(PROMPT_PRESETS)}")
        unknown = set(data) - fields
        if unknown:
            raise ModelFormatError(f"{path}: unknown prompt template keys {sorted(unknown)}; valid: {sorted(fields)}")
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            raise ModelFormatError(f"{path}: prompt template values must be strings: {bad}")
        return replace(PROMPT_PRESETS[preset], **data)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, ensure_ascii=False)

    def profile_text(self, profile: Profile) -> str:
        queries = "; ".join(profile.queries) if profile.queries else "(none)"
        extra = f"\nAbout the user: {profile.extra}" if profile.extra else ""
        return self.profile.format(title=profile.title, queries=queries, extra=extra)

    def assistant_prefix(self, mode: str) -> str:
        """The assistant prefix as written in the template (the engine cuts fast mode's: see AnswerTokens)."""
        if mode not in JUDGE_MODES:
            raise InvalidInputError(f"unknown judge mode {mode!r}; valid: {', '.join(JUDGE_MODES)}")
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
        user = {"role": "user", "content": content}
        if not self.system:
            return [user]
        return [{"role": "system", "content": [{"type": "text", "text": self.system}]}, user]


PROMPT_PRESETS: dict[str, PromptTemplate] = {
    "c4u": PromptTemplate(),
    "creative4u_paper": PromptTemplate(
        system="",
        profile="High-frequency queries: {queries}; Product title: {title}{extra}; ",
        label_a="Creative A: ",
        label_b=", Creative B: ",
        question=";\n" + PAPER_PROTOCOL,
    ),
}


def prompt_template(prompt: "PromptTemplate | str | None", model_dir: str | Path) -> PromptTemplate:
    """A PromptTemplate as given, a preset by name, or (None) the checkpoint's own."""
    if prompt is None:
        return load_prompt_template(model_dir)
    if isinstance(prompt, PromptTemplate):
        return prompt
    if isinstance(prompt, str) and prompt in PROMPT_PRESETS:
        return PROMPT_PRESETS[prompt]
    raise InvalidInputError(f"prompt must be a PromptTemplate or a preset name ({', '.join(PROMPT_PRESETS)}), "
                            f"got {prompt!r}")


def load_prompt_template(model_dir: str | Path) -> PromptTemplate:
    """The checkpoint's own template (c4u_prompt.json) if it ships one, else the default."""
    path = Path(model_dir) / "c4u_prompt.json"
    return PromptTemplate.from_json(path) if path.is_file() else PromptTemplate()
