"""CreativeSpec validation and serialization, and the rendering: deterministic, sized, visibly different."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from c4u_engine.data.catalog import CATALOGUE, CATEGORIES
from c4u_engine.data.contact import contact_sheet
from c4u_engine.data.creatives import BACKGROUNDS, CROPS, LAYOUTS, CreativeSpec, hue_distance, render
from c4u_engine.errors import InvalidInputError

BASE = CreativeSpec(category="bag", product_hue=10.0, product_scale=0.6, crop="none", angle=0.0,
                    background="solid", background_hue=20.0, layout="centered", side=1)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _changed_fraction(a: Image.Image, b: Image.Image) -> float:
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=-1)
    return float((diff > 40).mean())


def test_spec_round_trips_through_dict() -> None:
    spec = replace(BASE, price_tag="-50%", selling_point="WATERPROOF", clutter=2, model=True, props=3, seed=7)
    assert CreativeSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("field,value", [
    ("category", "spaceship"), ("product_hue", 360.0), ("product_scale", 0.95), ("crop", "middle"),
    ("angle", 90.0), ("background", "plaid"), ("layout", "diagonal"), ("side", 0), ("clutter", 3),
    ("props", 4), ("call_to_action", 1), ("price_tag", "x" * 9), ("seed", -1), ("side", True), ("props", 1.0),
    ("product_hue", float("nan")), ("angle", "10"),
])
def test_spec_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        replace(BASE, **{field: value})


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(InvalidInputError, match="unknown fields"):
        CreativeSpec.from_dict({**BASE.to_dict(), "sparkles": True})
    data = BASE.to_dict()
    del data["layout"]
    with pytest.raises(InvalidInputError, match="layout"):
        CreativeSpec.from_dict(data)


def test_hue_distance_is_circular() -> None:
    assert hue_distance(350.0, 10.0) == pytest.approx(20.0)
    assert hue_distance(0.0, 180.0) == pytest.approx(180.0)
    assert hue_distance(90.0, 90.0) == 0.0


@pytest.mark.parametrize("size", [32, 112, 224])
def test_every_option_renders_at_size(size: int) -> None:
    for i, category in enumerate(CATEGORIES):
        spec = replace(BASE, category=category, background=BACKGROUNDS[i % len(BACKGROUNDS)],
                       layout=LAYOUTS[i % len(LAYOUTS)], crop=CROPS[i % len(CROPS)], angle=(i - 4) * 5.0,
                       price_tag="$9", selling_point="NEW", call_to_action=True, clutter=i % 3, model=i % 2 == 0,
                       props=i % 4, side=1 if i % 2 else -1, seed=i)
        image = render(spec, size)
        assert image.mode == "RGB" and image.size == (size, size)


def test_render_is_deterministic() -> None:
    spec = replace(BASE, background="noise", clutter=2, props=2, seed=123, angle=12.5)
    assert _png(render(spec, 224)) == _png(render(spec, 224))
    assert _png(render(replace(spec, seed=124), 224)) != _png(render(spec, 224))


def test_render_rejects_bad_size() -> None:
    with pytest.raises(InvalidInputError, match="size"):
        render(BASE, 8)


def test_bold_features_change_many_pixels() -> None:
    # Each appeal-relevant attribute must be visible to a tiny vision tower at 112 px.
    plain = render(BASE, 112)
    for change in ({"price_tag": "-50%"}, {"selling_point": "WATERPROOF"}, {"clutter": 2}, {"model": True},
                   {"crop": "left"}, {"background": "noise"}, {"layout": "border"}, {"product_scale": 0.35}):
        assert _changed_fraction(plain, render(replace(BASE, **change), 112)) > 0.04, change


def test_price_badge_is_red() -> None:
    arr = np.asarray(render(replace(BASE, price_tag="-50%", background_hue=200.0, product_hue=120.0), 224), np.int16)
    red = (arr[..., 0] > 190) & (arr[..., 1] < 60) & (arr[..., 2] < 70)
    assert red.mean() > 0.03


def test_contact_sheet(tmp_path: Path) -> None:
    sheet = contact_sheet(n_pairs=8, seed=0, size=112)
    assert sheet.width > 4 * 112 and sheet.height > 4 * 112
    sheet.save(tmp_path / "contact.png")
    assert (tmp_path / "contact.png").stat().st_size > 0


def test_catalogue_titles_are_unique() -> None:
    titles = [p.title for p in CATALOGUE]
    assert len(titles) == len(set(titles))
