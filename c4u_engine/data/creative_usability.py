"""Usability samples made from the judge's own creatives (data/creatives.py): the six screening classes applied to
the ads the judge ranks, and ads with no product at all.

The usability generator (data/usability.py) draws its own scenes; the screener trained on them alone rejected the
judge's creatives (clutter, crops, close-ups, borders, insets: issue 26). Here a creative is drawn as the judge's
data draws it (`pairs.sample_spec`) and, for an unusable sample, its product is drawn with one defect:

- available: the creative as the judge sees it (a podium under the product now and then, so a podium means nothing);
- space mismatch: the product floats above the floor or a podium (its shadow left behind or gone), or sinks into it;
- size mismatch: a speck (5-14% of the height; creatives draw 20-90%) or a giant that overflows the frame (115-160%);
- indistinctiveness: faded (30-65% opaque) into a background of its own hue; also `no_product`: the ad without any
  product (and plain images: one colour, a gradient, noise), which a screen must not call usable either;
- shape hallucination and unsuitable: the rendered product changed, or the cut-out damaged, as data/usability.py
  does it (`_hallucinate`, `_damage`), in the ad and in its picture-in-picture close-up alike.

Each sample is a `usability.UsabilitySample` (ad, cut-out, text, label, difficulty, meta). Pure function of
(seed, index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from c4u_engine.data import creatives as cr
from c4u_engine.data import usability as us
from c4u_engine.data.catalog import CATALOGUE, CATEGORIES
from c4u_engine.data.pairs import sample_spec
from c4u_engine.errors import InvalidInputError
from c4u_engine.screening.classes import CLASSES

# Labels a sample can be drawn with: the screening classes, and an ad with no product (labelled indistinctiveness).
NO_PRODUCT = "no_product"
KINDS = CLASSES + (NO_PRODUCT,)
KIND_WEIGHTS = (0.42, 0.1, 0.1, 0.1, 0.1, 0.1, 0.08)
SIZES = (112, 128, 160, 224)  # the judge's creatives come at many sizes; the screener sees them at 64 px


def _fit(shown: Image.Image, ref_height: int, scale_of: int) -> Image.Image:
    """`shown` (drawn at the cut-out's resolution, whose product height is `scale_of`) at a product height of
    `ref_height` pixels."""
    f = ref_height / max(1, scale_of)
    return shown.resize((max(1, round(shown.width * f)), max(1, round(shown.height * f))), Image.Resampling.LANCZOS)


def _layer_fn(category: str, hue: float, shown: Image.Image | None, cut_height: int,
              fade: float) -> Callable[[str, float, int], Image.Image]:
    """A product-layer function (creatives' `_product_layer` signature) drawing `shown` (a changed cut-out; None:
    the true product) inside the true product's margins, faded to `fade` opacity."""

    def layer(_category: str, _hue: float, px: int) -> Image.Image:
        true = cr._product_layer(category, hue, px)
        box = true.getbbox()
        out = true
        if shown is not None and box is not None:
            x0, y0, x1, y1 = box
            prod = _fit(shown, y1 - y0, cut_height)
            out = Image.new("RGBA", (x0 + prod.width + px - x1, y0 + prod.height + px - y1), (0, 0, 0, 0))
            out.paste(prod, (x0, y0))
        if fade < 1.0:
            a = np.asarray(out.getchannel("A"), np.float32) * fade
            out = out.copy()
            out.putalpha(Image.fromarray(a.round().astype(np.uint8)))
        return out

    return layer


def _podium(image: Image.Image, size: int, cx: float, rng: np.random.Generator,
            hue: float) -> tuple[float, list, tuple]:
    """Draw a podium under x = cx; returns its top y, its box and its colour."""
    top, width = us._u(rng, 0.66, 0.8) * size, us._u(rng, 0.5, 0.85) * size
    left = min(max(0.0, cx - width * us._u(rng, 0.3, 0.7)), size - width)
    box = [left, top, left + width, size]
    colour = cr.hsv(hue + 180.0, 0.18, us._u(rng, 0.55, 0.8))
    d = ImageDraw.Draw(image)
    d.rectangle(box, fill=colour)
    d.line([box[0], top, box[2], top], fill=cr.hsv(hue + 180.0, 0.1, 0.95), width=max(1, size // 60))
    return top, box, colour


def _paste_fn(layer: Callable[[str, float, int], Image.Image], *, scale: float | None, surface: str,
              placement: str, offset: float, shadow: str,
              seed: int) -> Callable[[Image.Image, cr.CreativeSpec, int], None]:
    """A paste function (creatives' `_paste_product` signature). surface: "none" (the creative's own placement),
    "podium" (one is drawn) or "floor" (the room's). placement: "stand" on the surface, "float" `offset` x size
    above it, "sink" `offset` x the product's height into it. shadow: "attached", "left" (on the surface, under a
    floating product) or "none"."""

    def paste(image: Image.Image, spec: cr.CreativeSpec, size: int) -> None:
        rng = np.random.default_rng([seed, size])
        px = max(8, round((spec.product_scale if scale is None else scale) * size))
        prod = layer(spec.category, spec.product_hue, px)
        if surface == "none" and shadow == "attached":  # the soft shadow creatives._paste_product draws
            soft = Image.new("RGBA", prod.size, (0, 0, 0, 0))
            w, h = prod.size
            ImageDraw.Draw(soft).ellipse([w * 0.08, h * 0.9, w * 0.92, h * 1.0], fill=(0, 0, 0, 70))
            prod = Image.alpha_composite(soft, prod)
        if spec.angle:
            prod = prod.rotate(spec.angle, resample=Image.Resampling.BILINEAR, expand=True)
        box = prod.getbbox() or (0, 0, prod.width, prod.height)
        cx, cy = cr._product_centre(spec, size, prod.size)
        if surface == "none":
            x0, y0 = round(cx - prod.width / 2), round(cy - prod.height / 2)
            y_base = y0 + box[3]
        else:
            if surface == "floor":
                top, pbox, colour = 0.7 * size, None, cr.hsv(spec.background_hue, 0.45, 0.58)
            else:
                top, pbox, colour = _podium(image, size, cx, rng, spec.background_hue)
            visible_h = box[3] - box[1]
            if placement == "float":
                y_base = top - offset * size
            elif placement == "sink":
                y_base = top + offset * visible_h
            elif surface == "floor":
                y_base = us._u(rng, top + 0.03 * size, 0.96 * size)
            else:
                y_base = top + us._u(rng, 0.0, 0.012) * size
            x0, y0 = round(cx - prod.width / 2), round(y_base - box[3])
        if shadow != "none" and surface != "none":
            sy = top if shadow == "left" else y_base
            left, right = x0 + box[0], x0 + box[2]
            layer_s = Image.new("RGBA", image.size, (0, 0, 0, 0))
            r = max(1.0, size * 0.015)
            ImageDraw.Draw(layer_s).ellipse([left + 0.08 * (right - left), sy - r, right - 0.08 * (right - left),
                                             sy + r], fill=(0, 0, 0, 70))
            image.alpha_composite(layer_s)
        image.paste(prod, (x0, y0), prod)
        if placement == "sink":  # the surface drawn over the product's base: it sinks into it
            d = ImageDraw.Draw(image)
            lo, hi = (x0 + box[0] - 1, x0 + box[2] + 1) if pbox is None else (max(pbox[0], x0 + box[0] - 1),
                                                                              min(pbox[2], x0 + box[2] + 1))
            d.rectangle([lo, top + 2, hi, y_base + 1], fill=colour)

    return paste


def _plain(rng: np.random.Generator, size: int) -> Image.Image:
    """An image with nothing in it: one colour, a gradient or noise (what a test or a broken generator gives)."""
    kind = int(rng.integers(3))
    if kind == 0:
        return Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    if kind == 1:
        a, b = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        rows = (a * (1 - t) + b * t).round().astype(np.uint8)
        return Image.fromarray(np.repeat(rows, size, axis=1), "RGB")
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def creative_sample(seed: int, index: int, kind: str | None = None, size: int | None = None) -> us.UsabilitySample:
    """Sample `index` of the set drawn with `seed`: a judge's creative with the defect `kind` (KINDS; drawn by
    KIND_WEIGHTS when None), at `size` (drawn from SIZES when None). A `no_product` sample is labelled
    indistinctiveness (the product cannot be seen) and says so in meta["defect"]."""
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"creative_sample: kind={kind!r}; valid kinds: {KINDS}")
    rng = np.random.default_rng([seed, index, 29])
    if kind is None:
        kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    size = int(SIZES[int(rng.integers(len(SIZES)))]) if size is None else size
    product = CATALOGUE[int(rng.integers(len(CATALOGUE)))]
    spec = sample_spec(rng, product)
    category, hue = spec.category, spec.product_hue
    cut = us._cutout(category, hue, 256)  # the product cut-out a user passes (RGBA, trimmed)
    shown, fade, scale, how, difficulty = None, 1.0, None, "", 0.0
    surface = "none" if spec.background != "room" and rng.random() < 0.7 else ("floor" if spec.background == "room"
                                                                                else "podium")
    placement, offset, shadow = "stand", 0.0, "attached"
    if kind in ("available", "indistinctiveness", "shape_hallucination", "unsuitable") and spec.background == "room":
        surface = "none" if rng.random() < 0.5 else "floor"  # the creative's own placement, or standing on the floor
    if kind == "unsuitable":
        difficulty = float(rng.uniform())
        cut, how = us._damage(cut, rng, difficulty)
        shown = cut
    elif kind == "shape_hallucination":
        difficulty = float(rng.uniform())
        shown, how = us._hallucinate(cut, category, hue, rng, difficulty)
    elif kind == "indistinctiveness":
        spread, difficulty = us._graded(rng, 5.0, 25.0)
        spec = replace(spec, background_hue=round((hue + us._u(rng, -spread, spread)) % 360.0, 1) % 360.0)
        fade, how = 0.3 + 0.35 * difficulty, "faded"
    elif kind == "size_mismatch":
        spec = replace(spec, crop="none")
        surface = "none"
        if rng.random() < 0.6:
            scale, difficulty = us._graded(rng, 0.05, 0.14)
            how = "too_small"
        else:
            scale, difficulty = us._graded(rng, 1.6, 1.15)
            how = "too_large"
    elif kind == "space_mismatch":
        spec = replace(spec, crop="none", product_scale=round(float(rng.uniform(0.25, 0.5)), 3),
                       layout="off_centre" if spec.layout == "off_centre" else "centered")
        surface = "floor" if spec.background == "room" else "podium"
        if rng.random() < 0.55:
            offset, difficulty = us._graded(rng, 0.3, 0.06)
            placement, how = "float", "floats"
            shadow = "left" if rng.random() < 0.5 else "none"
        else:
            offset, difficulty = us._graded(rng, 0.55, 0.18)
            placement, how = "sink", "sinks"
    elif kind == NO_PRODUCT:
        how = NO_PRODUCT
        if rng.random() < 0.25:
            image = _plain(rng, size)
            text = product.title
            meta = {"category": category, "hue": hue, "background": "plain", "defect": how, "source": "creatives"}
            return us.UsabilitySample(image, cut, text, "indistinctiveness", 0.0, meta)
    if kind == "available" and surface == "none":
        drawing = None  # exactly the judge's creative
    elif kind == NO_PRODUCT:
        drawing = cr.ProductDrawing(paste=lambda image, spec, size: None,
                                    layer=lambda c, h, px: Image.new("RGBA", (px, px), (0, 0, 0, 0)))
    else:
        layer = _layer_fn(category, hue, shown, cut.height, fade)
        paste = _paste_fn(layer, scale=scale, surface=surface, placement=placement, offset=offset,
                          shadow=shadow, seed=int(rng.integers(2**31)))
        drawing = cr.ProductDrawing(paste=paste, layer=layer)
    image = cr.render(spec, size, product=drawing)
    text = product.title if rng.random() < 0.7 else f"{product.title}, {CATEGORIES[category][0]}"
    label = "indistinctiveness" if kind == NO_PRODUCT else kind
    meta = {"category": category, "hue": hue, "background": spec.background, "surface": surface, "defect": how,
            "layout": spec.layout, "crop": spec.crop, "source": "creatives"}
    return us.UsabilitySample(image, cut, text, label, round(difficulty, 4), meta)
