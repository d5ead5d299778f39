"""A profile-free description of one synthetic creative: every visual attribute the hidden appeal reads.

Used as an auxiliary training target (the "perceive" form of SFT, train/batching.py): the chain of thought must read
these same attributes off two images and compare them, and a 3.8M-parameter model learns to see them much faster from
short single-image sequences than from the few informative tokens inside a long comparison. The words are the
chain of thought's own (reasoning.py), so what is learnt here is what the reasoning writes.
"""

from __future__ import annotations

from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.data.reasoning import badge_words, describe_section, look_words, selling_words

DESCRIBE_QUESTION = "Describe this creative."
_SECTIONS = (("text", "Text in image"), ("models_props", "Models and props"), ("layout", "Layout"),
             ("subject", "Product subject"), ("background", "Background"))


def describe_creative(spec: CreativeSpec) -> str:
    """E.g. "Creative: no price badge, selling point, busy look. Text in image: some clutter. Models and props:
    model, one prop. Layout: centered. Product subject: full, large. Background: room scene, harmonious." """
    parts = [f"Creative: {badge_words(spec)}, {selling_words(spec)}, {look_words(spec)}."]
    parts += [f"{title}: {describe_section(section, spec, (), '')}." for section, title in _SECTIONS]
    return " ".join(parts)
