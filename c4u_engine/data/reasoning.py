"""The comparative chain of thought for a pair, following the Creative4U evaluation protocol.

Order: identical? / too similar to judge? -> query match, title match, text in image, models and props, layout,
product subject, background (A vs B, each with a verdict) -> conclusion naming the creative to click.

The text is generated from the hidden appeal's own terms (appeal.appeal_breakdown), so each verdict says which
creative the appeal actually favours in that section and the conclusion always names the label: the reasoning
argues for the winner with the factors that drive the click. Short sentences from a small fixed vocabulary
(the model's tokenizer is trained on it); the text goes inside <think>...</think>, the answer is separate.
"""

from __future__ import annotations

from collections.abc import Sequence

from c4u_engine.data.appeal import SECTIONS, appeal_breakdown, is_harmonious, query_intent, size_class, title_tier
from c4u_engine.data.catalog import CATEGORIES
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.errors import InvalidInputError

TOO_SIMILAR = 0.2  # a noiseless appeal gap below this is "too similar to judge"
SLIGHT = 0.35  # a section gap below this is "slightly better"
SECTION_TITLES = {
    "query": "Query match",
    "title": "Title match",
    "text": "Text in image",
    "models_props": "Models and props",
    "layout": "Layout",
    "subject": "Product subject",
    "background": "Background",
}
_LAYOUT_WORDS = {"centered": "centered", "off_centre": "off centre", "border": "border",
                 "picture_in_picture": "picture in picture"}
_BACKGROUND_WORDS = {"solid": "plain", "gradient": "gradient", "stripes": "striped", "noise": "noisy",
                     "room": "room scene"}
_COUNT_WORDS = ("no props", "one prop", "two props", "three props")


def look_words(spec: CreativeSpec) -> str:
    return "clean look" if spec.clean_look else "busy look"


def badge_words(spec: CreativeSpec) -> str:
    return "price badge" if spec.price_tag else "no price badge"


def selling_words(spec: CreativeSpec) -> str:
    return "selling point" if spec.selling_point else "no selling point"


def describe_section(section: str, spec: CreativeSpec, queries: Sequence[str], title: str) -> str:
    """A short noun phrase describing what one creative shows for one section ("" when the section is moot)."""
    if section == "query":
        intent = query_intent(queries)
        if intent == "premium":
            return look_words(spec) + (", price badge" if spec.price_tag else "")
        return {"discount": badge_words, "feature": selling_words}[intent](spec) if intent != "neutral" else ""
    if section == "title":
        tier = title_tier(title)
        if tier == "standard":
            return ""
        return {"budget": badge_words, "premium": look_words, "feature": selling_words}[tier](spec)
    if section == "text":
        shows_text = spec.selling_point or spec.price_tag or spec.call_to_action
        words = ("clean text" if shows_text else "no text", "some clutter", "heavy clutter")[spec.clutter]
        return words + (", call to action" if spec.call_to_action else "")
    if section == "models_props":
        return ("model, " if spec.model else "no model, ") + _COUNT_WORDS[spec.props]
    if section == "layout":
        return _LAYOUT_WORDS[spec.layout]
    if section == "subject":
        return ("full, " if spec.crop == "none" else "cropped, ") + size_class(spec.product_scale)
    return _BACKGROUND_WORDS[spec.background] + (", harmonious" if is_harmonious(spec) else ", clashing")


def _context(section: str, spec: CreativeSpec, queries: Sequence[str], title: str) -> str:
    """What matters in this section for this user and product ("" when nothing special)."""
    if section == "query":
        return {"discount": "the queries seek low prices.", "premium": "the queries seek luxury.",
                "feature": "the queries seek product features.",
                "neutral": "the queries show no clear need."}[query_intent(queries)]
    if section == "title":
        return {"budget": "the title offers a discount.", "premium": "the title is premium.",
                "feature": "the title names a feature.", "standard": "the title is plain."}[title_tier(title)]
    if section == "models_props" and CATEGORIES[spec.category][1]:
        return "the product is worn or carried."
    return ""


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def make_reasoning(spec_a: CreativeSpec, spec_b: CreativeSpec, title: str, queries: Sequence[str], label: str) -> str:
    """The chain of thought (without <think> tags) arguing that `label` ("A" or "B") is more likely clicked.

    Raises InvalidInputError when the hidden appeal clearly favours the other creative: the reasoning must never
    argue for the loser.
    """
    if label not in ("A", "B"):
        raise InvalidInputError(f"make_reasoning: label={label!r}; valid values: 'A', 'B'")
    if spec_a == spec_b:
        return f"Identical: yes. The two creatives are the same. Conclusion: no difference. I answer {label}."
    terms_a = appeal_breakdown(spec_a, title, queries)
    terms_b = appeal_breakdown(spec_b, title, queries)
    gap = sum(terms_a.values()) - sum(terms_b.values())
    if abs(gap) < TOO_SIMILAR:
        return (f"Identical: no. Too similar to judge: yes. The differences hardly change clicks. "
                f"Conclusion: no clear winner. I answer {label}.")
    winner = "A" if gap > 0 else "B"
    if winner != label:
        raise InvalidInputError(
            f"make_reasoning: label={label!r} but the appeal favours {winner} by {abs(gap):.2f}; "
            "the reasoning cannot argue for the less appealing creative")
    loser = "B" if winner == "A" else "A"
    lines = ["Identical: no. Too similar to judge: no."]
    wins: dict[str, list[tuple[float, str]]] = {"A": [], "B": []}
    for section in SECTIONS:
        diff = terms_a[section] - terms_b[section]
        desc_a = describe_section(section, spec_a, queries, title)
        desc_b = describe_section(section, spec_b, queries, title)
        context = _context(section, spec_a, queries, title)
        parts = [f"{SECTION_TITLES[section]}:"]
        if context:
            parts.append(context)
        if not desc_a:
            pass  # neutral queries or a plain title: nothing to compare
        else:
            # Always both sides, even when equal: a "Both: x." form makes a small model decide "same or different"
            # in one token before it has looked at B, and it learnt to say "Both" with A's value (measured).
            parts.append(f"A: {desc_a}. B: {desc_b}.")
        if abs(diff) < 1e-9:
            parts.append("Similar.")
        else:
            better = "A" if diff > 0 else "B"
            parts.append(f"{better} is {'slightly ' if abs(diff) < SLIGHT else ''}better.")
            wins[better].append((abs(diff), SECTION_TITLES[section].lower()))
        lines.append(" ".join(parts))
    top = [name for _, name in sorted(wins[winner], key=lambda t: -t[0])[:3]]
    conclusion = f"Conclusion: {winner} wins on {_join(top)}."
    if wins[loser]:
        conclusion += f" {loser} wins on {_join([n for _, n in sorted(wins[loser], key=lambda t: -t[0])[:2]])}."
    conclusion += f" The user is more likely to click {winner}."
    lines.append(conclusion)
    return "\n".join(lines)


def concluded_label(reasoning: str) -> str | None:
    """The creative the reasoning's conclusion names ("A"/"B"), or None when it names none."""
    for line in reversed(reasoning.splitlines()):
        if line.startswith("Conclusion:") or "Conclusion:" in line:
            tail = line.rstrip(". ")
            if tail.endswith(("click A", "answer A")):
                return "A"
            if tail.endswith(("click B", "answer B")):
                return "B"
            return None
    return None
