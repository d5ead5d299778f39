"""Synthetic usability samples (RFNet-style screening): a product cut-out placed in a scene, labelled usable or with
the defect that makes the ad unusable.

Each sample has the rendered ad, the product cut-out (RGBA, transparent background) and the product's description.
Classes (RF1M's six): available; space mismatch (floats above or sinks into the scene's surface); size mismatch
(implausible scale for the product kind the text names); indistinctiveness (the product blends into a background of
its own hue); shape hallucination (the rendered product differs from the cut-out: another product, another colour,
a warp, an extra or a missing part); unsuitable (the cut-out itself is truncated or damaged).

Every defect has a magnitude drawn from a graded range, `difficulty` in [0, 1] (1 = the subtlest case), so the set
holds near-misses, not only extremes. Some defects are visible only against the cut-out or the text (another product
kind, another colour, a watch at a bag's scale): what the multi-input model can see and a single-image model cannot.
Products, backgrounds, overlays and shadows are drawn by data/creatives.py, so the judge's creatives are close to
this distribution. Pure function of (seed, index): same input, same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from c4u_engine.data import creatives as cr
from c4u_engine.data.catalog import CATALOGUE, CATEGORIES, Product
from c4u_engine.errors import InvalidInputError

from c4u_engine.screening.classes import CLASSES  # noqa: F401 (re-exported: the labels this generator draws)
# Share of each class in a generated set: usable renders are the largest class, as in generated ad pools.
CLASS_WEIGHTS = (0.4, 0.12, 0.12, 0.12, 0.12, 0.12)
# Plausible product height / image height per product kind; size mismatch lies outside with a margin.
SMALL_KINDS = ("watch", "mug", "phone", "bottle")
PLAUSIBLE_SCALE = {"small": (0.22, 0.38), "large": (0.32, 0.5)}
IMPLAUSIBLE_SCALE = {"small": ((0.08, 0.13), (0.5, 0.8)), "large": ((0.1, 0.2), (0.62, 0.88))}
SIZE = 128


@dataclass(frozen=True)
class UsabilitySample:
    """One screening example: the generated ad (RGB), the product cut-out (RGBA), the text and the label."""

    generated: Image.Image = field(repr=False)
    product: Image.Image = field(repr=False)
    text: str
    label: str
    difficulty: float  # 0 = the most blatant defect, 1 = the subtlest; 0 for "available"
    meta: dict[str, Any] = field(default_factory=dict)


def _kind(category: str) -> str:
    return "small" if category in SMALL_KINDS else "large"


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _graded(rng: np.random.Generator, blatant: float, subtle: float) -> tuple[float, float]:
    """A defect magnitude between its blatant and its subtle end, and the difficulty it stands for."""
    d = float(rng.uniform(0.0, 1.0))
    return blatant + (subtle - blatant) * d, d


def _cutout(category: str, hue: float, px: int) -> Image.Image:
    """The product alone, trimmed to its visible pixels (what a cut-out on a transparent background is)."""
    layer = cr._product_layer(category, hue, px)
    box = layer.getbbox()
    return layer.crop(box) if box else layer


def _damage(cut: Image.Image, rng: np.random.Generator, label_rng_mag: float) -> tuple[Image.Image, str]:
    """An unsuitable cut-out: truncated by a straight cut, or damaged (holes and torn strokes), magnitude in [0,1]."""
    cut = cut.copy()
    w, h = cut.size
    alpha = np.asarray(cut.getchannel("A")).copy()
    if rng.random() < 0.5:
        keep = 1.0 - (0.45 - 0.27 * label_rng_mag)  # cut 45% (blatant) .. 18% (subtle) away
        side = int(rng.integers(4))
        if side == 0:
            alpha[:, round(w * keep):] = 0
        elif side == 1:
            alpha[:, : round(w * (1 - keep))] = 0
        elif side == 2:
            alpha[round(h * keep):, :] = 0
        else:
            alpha[: round(h * (1 - keep)), :] = 0
        how = "truncated"
    else:
        holes = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(holes)
        n = 6 - round(4 * label_rng_mag)
        for _ in range(n):
            r = max(2.0, min(w, h) * _u(rng, 0.08, 0.16))
            x, y = _u(rng, 0.15, 0.85) * w, _u(rng, 0.15, 0.85) * h
            if rng.random() < 0.5:
                d.ellipse([x - r, y - r, x + r, y + r], fill=255)
            else:
                d.line([x - 2 * r, y - r, x + 2 * r, y + r], fill=255, width=max(2, round(r * 0.5)))
        alpha[np.asarray(holes) > 0] = 0
        how = "damaged"
    cut.putalpha(Image.fromarray(alpha))
    return cut, how


def _hallucinate(cut: Image.Image, category: str, hue: float, rng: np.random.Generator,
                 mag: float) -> tuple[Image.Image, str]:
    """The product as a generator may wrongly render it: another kind, another colour, warped, a part more or less."""
    w, h = cut.size
    how = ("other_product", "other_colour", "warp", "extra_part", "missing_part")[int(rng.integers(5))]
    if how == "other_product":
        others = [c for c in CATEGORIES if c != category]
        return _cutout(others[int(rng.integers(len(others)))], hue, max(w, h)), how
    if how == "other_colour":
        shift = 180.0 - 110.0 * mag  # 180 degrees away (blatant) .. 70 (subtle)
        return _cutout(category, (hue + shift * (1 if rng.random() < 0.5 else -1)) % 360.0, max(w, h)), how
    if how == "warp":
        f = 2.0 - 0.7 * mag  # stretched 2x .. 1.3x along one axis
        size = (round(w * f), h) if rng.random() < 0.5 else (w, round(h * f))
        return cut.resize(size, Image.Resampling.BILINEAR), how
    out = cut.copy()
    if how == "extra_part":
        # A second copy of one half of the product grafted on: a duplicated handle, a second cap.
        part = cut.crop((0, 0, w, h // 2)) if rng.random() < 0.5 else cut.crop((0, 0, w // 2, h))
        s = 0.9 - 0.45 * mag
        part = part.resize((max(1, round(part.width * s)), max(1, round(part.height * s))))
        canvas = Image.new("RGBA", (w + part.width // 2, h + part.height // 3), (0, 0, 0, 0))
        canvas.alpha_composite(out, (0, canvas.height - h))
        canvas.alpha_composite(part, (canvas.width - part.width, 0))
        return canvas, how
    alpha = np.asarray(out.getchannel("A")).copy()  # missing part: a wedge of the product is gone
    frac = 0.5 - 0.28 * mag
    if rng.random() < 0.5:
        x0 = round(w * (1 - frac)) if rng.random() < 0.5 else 0
        alpha[: round(h * 0.6), x0: x0 + round(w * frac)] = 0
    else:
        y0 = round(h * (1 - frac)) if rng.random() < 0.5 else 0
        alpha[y0: y0 + round(h * frac), round(w * 0.4):] = 0
    out.putalpha(Image.fromarray(alpha))
    return out, how


def _scene(rng: np.random.Generator, category: str, bg_hue: float, size: int) -> tuple[Image.Image, dict]:
    """A background and, most of the time, a surface the product must stand on (room floor or a podium)."""
    kind = cr.BACKGROUNDS[int(rng.integers(len(cr.BACKGROUNDS)))]
    side = 1 if rng.random() < 0.5 else -1
    spec = cr.CreativeSpec(category=category, product_hue=0.0, product_scale=0.5, crop="none", angle=0.0,
                           background=kind, background_hue=bg_hue, layout="centered", side=side,
                           props=int(rng.integers(0, 3)) if kind == "room" else 0,
                           seed=int(rng.integers(2**31)))
    image = cr._background(spec, size).convert("RGBA")
    if spec.props:
        cr._draw_props(image, spec, size)
    if kind == "room":  # the floor zone: a product's base may stand anywhere on it
        return image, {"background": kind, "surface": "floor", "y": 0.7 * size, "x": (0.12 * size, 0.88 * size),
                       "spec": spec}
    if rng.random() < 0.35:  # a studio shot: nothing to stand on, nothing to float above
        return image, {"background": kind, "surface": "none", "spec": spec}
    top, width = _u(rng, 0.62, 0.8) * size, _u(rng, 0.55, 0.9) * size
    cx = _u(rng, 0.5 * width, size - 0.5 * width)
    d = ImageDraw.Draw(image)
    colour = cr.hsv(bg_hue + 180.0, 0.18, _u(rng, 0.55, 0.8))
    box = [cx - width / 2, top, cx + width / 2, size]
    d.rectangle(box, fill=colour)
    d.line([box[0], top, box[2], top], fill=cr.hsv(bg_hue + 180.0, 0.1, 0.95), width=max(1, size // 60))
    return image, {"background": kind, "surface": "podium", "y": top, "x": (box[0], box[2]), "box": box,
                   "colour": colour, "spec": spec}


def _shadow(image: Image.Image, x0: float, x1: float, y: float, size: int) -> None:
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    r = max(1.0, size * 0.012)
    ImageDraw.Draw(layer).ellipse([x0, y - r, x1, y + r], fill=(0, 0, 0, 80))
    image.alpha_composite(layer)


def _overlays(image: Image.Image, rng: np.random.Generator, product, size: int) -> list[str]:
    """Ad furniture drawn over the scene (headline, price badge, button): distractors for the screener."""
    d = ImageDraw.Draw(image)
    drawn = []
    if rng.random() < 0.3:
        cr._draw_headline(d, product.selling_point, size)
        drawn.append("headline")
    if rng.random() < 0.25:
        cr._draw_price_badge(d, product.price_text, size, 0.32)
        drawn.append("price")
    if rng.random() < 0.2:
        cr._draw_button(d, "SHOP NOW", size)
        drawn.append("button")
    return drawn


def sample(seed: int, index: int, label: str | None = None, size: int = SIZE, *, product: Product | None = None,
           hue: float | None = None) -> UsabilitySample:
    """Sample `index` of the set drawn with `seed` (its label drawn by CLASS_WEIGHTS, its product from the catalogue
    and the product's hue uniformly, unless given)."""
    if label is not None and label not in CLASSES:
        raise InvalidInputError(f"usability.sample: label={label!r}; valid labels: {CLASSES}")
    if not isinstance(size, int) or not 64 <= size <= 512:
        raise InvalidInputError(f"usability.sample: size={size!r} must be an int in [64, 512]")
    rng = np.random.default_rng([seed, index, 17])
    if label is None:
        label = CLASSES[int(rng.choice(len(CLASSES), p=CLASS_WEIGHTS))]
    drawn_product, drawn_hue = CATALOGUE[int(rng.integers(len(CATALOGUE)))], _u(rng, 0, 360)
    product = product or drawn_product
    hue = drawn_hue if hue is None else float(hue) % 360.0
    category, kind = product.category, _kind(product.category)
    difficulty, how = 0.0, ""
    if label == "indistinctiveness":
        spread, difficulty = _graded(rng, 5.0, 25.0)
        bg_hue = (hue + _u(rng, -spread, spread)) % 360.0
    else:  # usable colours stand apart from the background
        bg_hue = (hue + _u(rng, 60, 300)) % 360.0
    cut = _cutout(category, hue, 2 * size)
    if label == "unsuitable":
        mag = float(rng.uniform())
        cut, how = _damage(cut, rng, mag)
        difficulty = mag
    shown = cut
    if label == "shape_hallucination":
        mag = float(rng.uniform())
        shown, how = _hallucinate(cut, category, hue, rng, mag)
        difficulty = mag
    scale = _u(rng, *PLAUSIBLE_SCALE[kind])
    if label == "size_mismatch":
        small, large = IMPLAUSIBLE_SCALE[kind]
        if rng.random() < 0.5:
            scale, difficulty = _graded(rng, small[0], small[1])
            how = "too_small"
        else:
            scale, difficulty = _graded(rng, large[1], large[0])
            how = "too_large"
    image, surf = _scene(rng, category, bg_hue, size)
    if label == "space_mismatch" and surf["surface"] == "none":
        image, surf = _scene(rng, category, bg_hue, size)  # a second draw; a studio shot cannot float
        while surf["surface"] == "none":
            image, surf = _scene(rng, category, bg_hue, size)
    ph = max(6, round(scale * size))
    pw = max(3, round(shown.width * ph / shown.height))
    if pw > 0.95 * size:  # a very wide product: fit its width instead
        pw = round(0.95 * size)
        ph = max(3, round(shown.height * pw / shown.width))
    layer = shown.resize((pw, ph), Image.Resampling.LANCZOS)
    if surf["surface"] == "none":
        cx = _u(rng, 0.3, 0.7) * size
        base = _u(rng, 0.55, 0.92) * size
        base = max(base, ph + 0.04 * size)
    else:
        lo, hi = surf["x"]
        cx = _u(rng, min(lo + pw / 2, (lo + hi) / 2), max(hi - pw / 2, (lo + hi) / 2))
        if surf["surface"] == "floor":
            base = _u(rng, surf["y"] + 0.03 * size, 0.96 * size)
        else:
            base = surf["y"] + _u(rng, 0.0, 0.012) * size
    sink = 0.0
    if label == "space_mismatch":
        if rng.random() < 0.55:
            gap, difficulty = _graded(rng, 0.3, 0.06)
            base = surf["y"] - gap * size
            how = "floats"
        else:
            sink, difficulty = _graded(rng, 0.55, 0.18)
            base = surf["y"] + sink * ph
            how = "sinks"
    base = min(base, size + ph * 0.6)
    x0, y0 = round(cx - pw / 2), round(base - ph)
    if label != "space_mismatch" or how == "floats":
        shadow_y = surf["y"] if (how == "floats" and rng.random() < 0.5) else base
        if not (how == "floats" and shadow_y != surf["y"] and rng.random() < 0.5):
            _shadow(image, x0 + pw * 0.08, x0 + pw * 0.92, shadow_y, size)
    if label == "indistinctiveness":
        alpha = 0.3 + 0.35 * difficulty  # faint to half-visible, against a background of the product's hue
        mask = layer.getchannel("A")
        rgb = np.asarray(layer.convert("RGB"), np.float32)
        bgpatch = np.asarray(image.crop((x0, y0, x0 + pw, y0 + ph)).convert("RGB"), np.float32)
        mixed = (1 - alpha) * bgpatch + alpha * rgb
        faded = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8)).convert("RGBA")
        faded.putalpha(mask)
        layer = faded
    image.paste(layer, (x0, y0), layer)  # clips at the edges
    if sink > 0:  # the surface is drawn over the product's base: it sinks into it
        d = ImageDraw.Draw(image)
        if surf["surface"] == "podium":
            b = surf["box"]
            d.rectangle([max(b[0], x0 - 1), surf["y"] + 1, min(b[2], x0 + pw + 1), base + 1], fill=surf["colour"])
        else:
            fill = cr.hsv(bg_hue, 0.45, 0.58)
            d.rectangle([x0 - 1, surf["y"] + 2, x0 + pw + 1, base + 1], fill=fill)
    drawn = _overlays(image, rng, product, size)
    text = product.title if rng.random() < 0.7 else f"{product.title}, {CATEGORIES[category][0]}"
    meta = {"category": category, "hue": round(hue, 2), "background": surf["background"], "surface": surf["surface"],
            "scale": round(scale, 4), "defect": how, "overlays": drawn}
    return UsabilitySample(image.convert("RGB"), cut, text, label, round(difficulty, 4), meta)
