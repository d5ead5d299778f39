"""The hidden click appeal of a creative for a product title and a user's queries.

A sum of a few readable terms, one per section of the Creative4U evaluation protocol, plus small seeded noise:

| section        | term (points)                                                                              |
| -------------- | ------------------------------------------------------------------------------------------ |
| query match    | discount queries: price badge +1.2 / premium queries: clean look +0.8, price badge -0.6 /   |
|                | feature queries: selling point +1.0 / neutral queries: 0                                   |
| title match    | budget title: price badge +0.6 / premium title: clean look +0.6 /                          |
|                | feature title: selling point +0.6                                                          |
| text in image  | clutter -0.9 per level (0, 1, 2); call to action +0.3                                      |
| models, props  | model +0.9 for apparel, +0.2 otherwise; 1-2 props +0.2, 3 props -0.2                       |
| layout         | picture in picture +0.4, centered +0.3, border +0.2, off centre 0                          |
| product        | size: small (<0.45) -0.3, medium 0, large (>=0.6) +0.3; cropped by an edge -0.9           |
| background     | harmonious hues (distance <=40 or >=140 degrees) +0.4, clashing -0.4;                      |
|                | noisy -0.5, striped -0.2, room scene +0.1, plain/gradient 0                                |

"Clean look" = plain or gradient background, no clutter, no price badge. Intent is read from the words of the
queries and the title (the same words the judge sees), so everything the appeal uses is visible to the model.
The product angle and hue alone are distractors with no effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from c4u_engine.data.catalog import BUDGET_TITLE_WORDS, CATEGORIES, FEATURE_TITLE_WORDS, PREMIUM_TITLE_WORDS
from c4u_engine.data.creatives import CreativeSpec, hue_distance

SECTIONS = ("query", "title", "text", "models_props", "layout", "subject", "background")
NOISE_STD = 0.12

_QUERY_WORDS = {
    "discount": ("cheap", "sale", "discount", "deal", "deals", "coupon", "clearance", "bargain", "off"),
    "premium": ("luxury", "designer", "premium", "high end", "exclusive", "elegant"),
    "feature": ("waterproof", "lightweight", "durable", "warranty", "rated", "wireless", "insulated"),
}
SMALL_SCALE, LARGE_SCALE = 0.45, 0.6
HARMONY_NEAR, HARMONY_FAR = 40.0, 140.0


def query_intent(queries: Sequence[str]) -> str:
    """The dominant intent of the queries: "discount", "premium", "feature" or "neutral" (ties: first listed)."""
    counts = {intent: 0 for intent in _QUERY_WORDS}
    for query in queries:
        words = query.lower()
        for intent, keys in _QUERY_WORDS.items():
            counts[intent] += any(_has_word(words, key) for key in keys)
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] > 0 else "neutral"


def title_tier(title: str) -> str:
    """What the title promises: "budget", "premium", "feature" or "standard"."""
    low = title.lower()
    if any(key in low if key.startswith("%") else _has_word(low, key) for key in BUDGET_TITLE_WORDS):
        return "budget"
    if any(_has_word(low, key) for key in PREMIUM_TITLE_WORDS):
        return "premium"
    if any(_has_word(low, key) for key in FEATURE_TITLE_WORDS):
        return "feature"
    return "standard"


def _has_word(text: str, key: str) -> bool:
    padded = f" {''.join(c if c.isalnum() else ' ' for c in text)} "
    return f" {key} " in padded


def size_class(scale: float) -> str:
    """"small", "medium" or "large": the appeal and the reasoning use the same three steps."""
    return "small" if scale < SMALL_SCALE else "large" if scale >= LARGE_SCALE else "medium"


def is_harmonious(spec: CreativeSpec) -> bool:
    """Analogous (close) or complementary (opposite) hues harmonize; the middle of the wheel clashes."""
    d = hue_distance(spec.product_hue, spec.background_hue)
    return d <= HARMONY_NEAR or d >= HARMONY_FAR


def appeal_breakdown(spec: CreativeSpec, title: str, queries: Sequence[str]) -> dict[str, float]:
    """The noiseless appeal, one term per section (keys: SECTIONS)."""
    badge, selling, clean = bool(spec.price_tag), bool(spec.selling_point), spec.clean_look
    intent = query_intent(queries)
    query = {
        "discount": 1.2 * badge,
        "premium": 0.8 * clean - 0.6 * badge,
        "feature": 1.0 * selling,
        "neutral": 0.0,
    }[intent]
    tier = title_tier(title)
    title_term = {"budget": 0.6 * badge, "premium": 0.6 * clean, "feature": 0.6 * selling, "standard": 0.0}[tier]
    text = -0.9 * spec.clutter + 0.3 * spec.call_to_action
    apparel = CATEGORIES[spec.category][1]
    models_props = (0.9 if apparel else 0.2) * spec.model + {0: 0.0, 1: 0.2, 2: 0.2, 3: -0.2}[spec.props]
    layout = {"picture_in_picture": 0.4, "centered": 0.3, "border": 0.2, "off_centre": 0.0}[spec.layout]
    subject = {"small": -0.3, "medium": 0.0, "large": 0.3}[size_class(spec.product_scale)]
    subject -= 0.9 * (spec.crop != "none")
    background = (0.4 if is_harmonious(spec) else -0.4) + {
        "noise": -0.5, "stripes": -0.2, "room": 0.1, "solid": 0.0, "gradient": 0.0}[spec.background]
    terms = (query, title_term, text, models_props, layout, subject, background)
    return {name: round(float(v), 6) for name, v in zip(SECTIONS, terms)}


def appeal_noise(spec: CreativeSpec, title: str, queries: Sequence[str], std: float = NOISE_STD) -> float:
    """Seeded noise: a pure function of (spec, title, queries), stable across processes and platforms."""
    key = json.dumps([spec.to_dict(), title, list(queries)], sort_keys=True).encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return float(np.random.default_rng(seed).normal(0.0, std))


def click_appeal(spec: CreativeSpec, title: str, queries: Sequence[str], noise_std: float = NOISE_STD) -> float:
    """The hidden click appeal: the sum of appeal_breakdown plus appeal_noise. Higher = more likely clicked."""
    total = sum(appeal_breakdown(spec, title, queries).values())
    return total + (appeal_noise(spec, title, queries, noise_std) if noise_std > 0 else 0.0)
