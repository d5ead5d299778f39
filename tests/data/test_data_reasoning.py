"""The chain of thought: protocol order, consistent with the label, short, from a small vocabulary."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from c4u_engine.data.appeal import SECTIONS, appeal_breakdown
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.data.pairs import sample_pair
from c4u_engine.data.reasoning import SECTION_TITLES, concluded_label, make_reasoning
from c4u_engine.errors import InvalidInputError

SPEC = CreativeSpec(category="shoe", product_hue=0.0, product_scale=0.6, crop="none", angle=0.0,
                    background="solid", background_hue=10.0, layout="centered", side=1)
DISCOUNT = ["cheap shoes", "shoes sale"]


@pytest.fixture(scope="module")
def samples() -> list:
    rng = np.random.default_rng([2024, 7])
    return [sample_pair(rng) for _ in range(400)]


def test_conclusion_names_the_label(samples: list) -> None:
    for s in samples:
        assert concluded_label(s.reasoning) == s.label
        assert s.reasoning.splitlines()[-1].endswith(f"The user is more likely to click {s.label}.")


def test_verdicts_agree_with_the_hidden_appeal(samples: list) -> None:
    for s in samples:
        terms_a = appeal_breakdown(s.spec_a, s.product.title, s.profile.queries)
        terms_b = appeal_breakdown(s.spec_b, s.product.title, s.profile.queries)
        lines = s.reasoning.splitlines()
        for section, line in zip(SECTIONS, lines[1:8]):
            assert line.startswith(SECTION_TITLES[section] + ":")
            diff = terms_a[section] - terms_b[section]
            verdict = line.rsplit(". ", 1)[-1] if not line.endswith("Similar.") else "Similar."
            expected = "Similar." if abs(diff) < 1e-9 else ("A" if diff > 0 else "B")
            assert verdict.startswith(expected), (line, diff)
        # every section the conclusion credits to a creative does favour that creative
        by_title = {SECTION_TITLES[k].lower(): k for k in SECTIONS}
        for who, named in re.findall(r"([AB]) wins on ([a-z ,]+)\.", lines[-1]):
            for name in re.split(r", | and (?!props)", named):
                diff = terms_a[by_title[name]] - terms_b[by_title[name]]
                assert (diff > 0) == (who == "A"), (name, lines[-1])
        assert re.search(rf"{s.label} wins on", lines[-1]), lines[-1]


def test_every_compared_section_describes_both_sides(samples: list) -> None:
    for s in samples:
        for line in s.reasoning.splitlines()[1:-1]:
            assert "Both:" not in line
            if line.startswith(("Text in image", "Models and props", "Layout", "Product subject", "Background")):
                assert re.search(r" A: [^.]+\. B: [^.]+\. ", line), line


def test_protocol_order_and_length(samples: list) -> None:
    for s in samples:
        lines = s.reasoning.splitlines()
        assert lines[0] == "Identical: no. Too similar to judge: no."
        assert [ln.split(":")[0] for ln in lines[1:8]] == [SECTION_TITLES[k] for k in SECTIONS]
        assert lines[8].startswith("Conclusion:")
        assert 60 <= len(s.reasoning.split()) <= 150
        assert "<think>" not in s.reasoning and "<answer>" not in s.reasoning


def test_vocabulary_is_small(samples: list) -> None:
    words = set()
    for s in samples:
        words.update(re.findall(r"[A-Za-z]+", s.reasoning.lower()))
    assert len(words) < 120, sorted(words)


def test_refuses_to_argue_for_the_loser() -> None:
    badge = replace(SPEC, price_tag="-50%")
    assert "click A" in make_reasoning(badge, SPEC, "Running shoes", DISCOUNT, "A")
    with pytest.raises(InvalidInputError, match="favours A"):
        make_reasoning(badge, SPEC, "Running shoes", DISCOUNT, "B")
    with pytest.raises(InvalidInputError, match="label"):
        make_reasoning(badge, SPEC, "Running shoes", DISCOUNT, "C")


def test_identical_and_too_similar() -> None:
    identical = make_reasoning(SPEC, SPEC, "Running shoes", DISCOUNT, "B")
    assert identical.startswith("Identical: yes.") and concluded_label(identical) == "B"
    close = make_reasoning(SPEC, replace(SPEC, angle=10.0), "Running shoes", DISCOUNT, "A")
    assert "Too similar to judge: yes." in close and concluded_label(close) == "A"


def test_concluded_label_without_conclusion() -> None:
    assert concluded_label("Layout: A: centered.") is None


def test_description_names_every_attribute_the_appeal_reads():
    from c4u_engine.data.description import describe_creative

    base = CreativeSpec(category="shirt", product_hue=120.0, product_scale=0.5, crop="none", angle=0.0,
                        background="solid", background_hue=120.0, layout="centered", side=1, selling_point="",
                        price_tag="", call_to_action=False, clutter=0, model=False, props=0, seed=1)
    text = describe_creative(base)
    assert text == ("Creative: no price badge, no selling point, clean look. Text in image: no text. Models and "
                    "props: no model, no props. Layout: centered. Product subject: full, medium. "
                    "Background: plain, harmonious.")
    changes = {"price_tag": "-33%", "selling_point": "WATERPROOF", "call_to_action": True, "clutter": 2,
               "model": True, "props": 3, "layout": "border", "product_scale": 0.7, "crop": "left",
               "background": "noise", "background_hue": 200.0}
    for name, value in changes.items():
        assert describe_creative(replace(base, **{name: value})) != text, name
