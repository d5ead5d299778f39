"""The synthetic product catalogue and user profiles.

A product is a category (which shape is drawn) and a title; a profile is a short list of high-frequency search
queries. Both are plain text, as in CreativePair: the judge sees the title and the queries in its prompt, and the
hidden appeal (appeal.py) reads intent from the same words, so the model can learn the link from the text alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# category -> (plural noun used in queries, apparel?)  Apparel is what a human model can wear or carry.
CATEGORIES: dict[str, tuple[str, bool]] = {
    "bottle": ("perfume", False),
    "box": ("gift box", False),
    "shoe": ("shoes", True),
    "phone": ("phone", False),
    "bag": ("handbag", True),
    "watch": ("watch", True),
    "shirt": ("shirt", True),
    "mug": ("mug", False),
}

# Title words that carry the product's tier (read by appeal.title_tier).
PREMIUM_TITLE_WORDS = ("premium", "luxury", "designer", "elegant")
BUDGET_TITLE_WORDS = ("budget", "cheap", "% off", "sale", "value")
FEATURE_TITLE_WORDS = ("waterproof", "lightweight", "durable", "wireless", "organic", "insulated")


@dataclass(frozen=True)
class Product:
    """One catalogue entry: the shape to draw, its title, and the texts an ad for it may show."""

    category: str
    title: str
    selling_point: str  # headline text, upper case
    price_text: str  # what the price badge says


# category -> list of (title, selling point, price badge text)
_TITLES: dict[str, list[tuple[str, str, str]]] = {
    "bottle": [
        ("Luxury eau de parfum", "PURE ELEGANCE", "$89"),
        ("Budget body spray - 40% off", "FRESH ALL DAY", "-40%"),
        ("Organic rose perfume", "100% ORGANIC", "$35"),
    ],
    "box": [
        ("Premium chocolate gift box", "HANDMADE", "$49"),
        ("Value snack box - sale", "30 SNACKS", "-30%"),
        ("Durable storage box", "EXTRA STRONG", "$19"),
    ],
    "shoe": [
        ("Premium leather running shoes", "HANDCRAFTED", "$149"),
        ("Budget running shoes - 50% off", "LIGHT & FAST", "-50%"),
        ("Waterproof hiking shoes", "WATERPROOF", "$79"),
    ],
    "phone": [
        ("Premium flagship smartphone", "PRO CAMERA", "$999"),
        ("Budget smartphone - 25% off", "BIG BATTERY", "-25%"),
        ("Waterproof rugged phone", "WATERPROOF", "$299"),
    ],
    "bag": [
        ("Premium leather handbag", "GENUINE LEATHER", "$259"),
        ("Cheap tote bag - 60% off", "ROOMY", "-60%"),
        ("Lightweight travel bag", "ONLY 400 G", "$59"),
    ],
    "watch": [
        ("Luxury automatic watch", "SWISS MADE", "$1299"),
        ("Budget sports watch - sale", "STEP COUNTER", "-35%"),
        ("Waterproof dive watch", "WATERPROOF", "$199"),
    ],
    "shirt": [
        ("Designer linen shirt", "PURE LINEN", "$120"),
        ("Budget cotton t-shirt - 3 for 2", "SOFT COTTON", "-33%"),
        ("Lightweight running shirt", "BREATHABLE", "$29"),
    ],
    "mug": [
        ("Elegant porcelain mug", "FINE CHINA", "$39"),
        ("Value coffee mug - 20% off", "DISHWASHER SAFE", "-20%"),
        ("Insulated travel mug", "HOT FOR 6 H", "$25"),
    ],
}

CATALOGUE: tuple[Product, ...] = tuple(
    Product(category, title, selling, price) for category, rows in _TITLES.items() for title, selling, price in rows
)

# Profile kinds and their query templates; {noun} is the category noun.
PROFILE_KINDS = ("discount", "premium", "feature", "neutral")
_QUERY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "discount": ("cheap {noun}", "{noun} sale", "discount {noun}", "{noun} deals", "{noun} coupon",
                 "{noun} clearance"),
    "premium": ("luxury {noun}", "designer {noun}", "premium {noun} brand", "high end {noun}", "exclusive {noun}"),
    "feature": ("waterproof {noun}", "lightweight {noun}", "durable {noun}", "{noun} with warranty",
                "best rated {noun}"),
    "neutral": ("{noun}", "new {noun}", "{noun} online", "{noun} shop", "{noun} ideas"),
}


@dataclass(frozen=True)
class Profile:
    """A user: the kind used to generate it (for analysis only) and the queries the judge actually sees."""

    kind: str
    queries: tuple[str, ...]


def sample_product(rng: np.random.Generator) -> Product:
    """One catalogue entry, uniformly."""
    return CATALOGUE[int(rng.integers(len(CATALOGUE)))]


def sample_profile(rng: np.random.Generator, category: str) -> Profile:
    """2-4 queries about the product's category: one intent, sometimes with one neutral query mixed in."""
    kind = PROFILE_KINDS[int(rng.integers(len(PROFILE_KINDS)))]
    noun = CATEGORIES[category][0]
    templates = _QUERY_TEMPLATES[kind]
    n = int(rng.integers(2, 5))
    picked = [templates[i] for i in rng.choice(len(templates), size=min(n, len(templates)), replace=False)]
    if kind != "neutral" and rng.random() < 0.3:
        neutral = _QUERY_TEMPLATES["neutral"]
        picked[-1] = neutral[int(rng.integers(len(neutral)))]
    return Profile(kind, tuple(t.format(noun=noun) for t in picked))
