"""The hidden appeal: it depends on the profile and the title, rewards what it says it rewards, and is seeded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from c4u_engine.data.appeal import appeal_breakdown, appeal_noise, click_appeal, query_intent, title_tier
from c4u_engine.data.catalog import CATALOGUE, PROFILE_KINDS
from c4u_engine.data.creatives import CreativeSpec

DISCOUNT = ["cheap shoes", "shoes sale", "discount shoes"]
PREMIUM = ["luxury shoes", "designer shoes"]
FEATURE = ["waterproof shoes", "durable shoes"]
NEUTRAL = ["shoes", "new shoes"]
TITLE = "Running shoes"  # no tier words: only the queries differ

CLEAN = CreativeSpec(category="shoe", product_hue=0.0, product_scale=0.6, crop="none", angle=0.0,
                     background="solid", background_hue=10.0, layout="centered", side=1)
BADGE = replace(CLEAN, price_tag="-50%", background="stripes")


def _clean(spec: CreativeSpec, title: str, queries: list[str]) -> float:
    return sum(appeal_breakdown(spec, title, queries).values())


def test_discount_profile_prefers_price_badge_premium_prefers_clean() -> None:
    assert _clean(BADGE, TITLE, DISCOUNT) > _clean(CLEAN, TITLE, DISCOUNT) + 0.5
    assert _clean(CLEAN, TITLE, PREMIUM) > _clean(BADGE, TITLE, PREMIUM) + 0.5
    # with noise too: the preference flips with the profile alone
    assert click_appeal(BADGE, TITLE, DISCOUNT) > click_appeal(CLEAN, TITLE, DISCOUNT)
    assert click_appeal(CLEAN, TITLE, PREMIUM) > click_appeal(BADGE, TITLE, PREMIUM)


def test_feature_profile_prefers_selling_point() -> None:
    with_point = replace(CLEAN, selling_point="WATERPROOF")
    assert _clean(with_point, TITLE, FEATURE) > _clean(CLEAN, TITLE, FEATURE) + 0.5
    assert _clean(with_point, TITLE, NEUTRAL) == _clean(CLEAN, TITLE, NEUTRAL)


def test_title_tier_matters() -> None:
    assert _clean(BADGE, "Budget running shoes - 50% off", NEUTRAL) > _clean(BADGE, TITLE, NEUTRAL)
    assert _clean(CLEAN, "Premium leather running shoes", NEUTRAL) > _clean(CLEAN, TITLE, NEUTRAL)


@pytest.mark.parametrize("worse", [
    {"clutter": 1}, {"clutter": 2}, {"crop": "left"}, {"product_scale": 0.3}, {"background": "noise"},
    {"background_hue": 90.0}, {"layout": "off_centre"},
])
def test_bad_attributes_lower_appeal(worse: dict) -> None:
    for queries in (DISCOUNT, PREMIUM, FEATURE, NEUTRAL):
        assert _clean(replace(CLEAN, **worse), TITLE, queries) < _clean(CLEAN, TITLE, queries)


def test_model_helps_apparel_more() -> None:
    shoe_gain = _clean(replace(CLEAN, model=True), TITLE, NEUTRAL) - _clean(CLEAN, TITLE, NEUTRAL)
    mug = replace(CLEAN, category="mug")
    mug_gain = _clean(replace(mug, model=True), TITLE, NEUTRAL) - _clean(mug, TITLE, NEUTRAL)
    assert shoe_gain > mug_gain > 0


def test_angle_is_a_distractor() -> None:
    assert appeal_breakdown(replace(CLEAN, angle=20.0), TITLE, DISCOUNT) == appeal_breakdown(CLEAN, TITLE, DISCOUNT)


def test_intent_and_tier_parsing() -> None:
    assert query_intent(DISCOUNT) == "discount" and query_intent(PREMIUM) == "premium"
    assert query_intent(FEATURE) == "feature" and query_intent(NEUTRAL) == "neutral"
    assert query_intent(["shoes deals", "shoes"]) == "discount"
    assert query_intent(["offshore shoes"]) == "neutral"  # whole words only
    tiers = {title_tier(p.title) for p in CATALOGUE}
    assert tiers == {"budget", "premium", "feature"}
    assert title_tier("Budget running shoes - 50% off") == "budget"
    assert title_tier("Plain mug") == "standard"
    assert set(PROFILE_KINDS) == {"discount", "premium", "feature", "neutral"}


def test_noise_is_seeded_and_small() -> None:
    assert appeal_noise(CLEAN, TITLE, DISCOUNT) == appeal_noise(CLEAN, TITLE, DISCOUNT)
    values = [appeal_noise(replace(CLEAN, seed=s), TITLE, DISCOUNT) for s in range(400)]
    assert 0.08 < float(np.std(values)) < 0.16
    assert click_appeal(CLEAN, TITLE, DISCOUNT, noise_std=0) == _clean(CLEAN, TITLE, DISCOUNT)
