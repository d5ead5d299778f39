"""A synthetic ad creative: a JSON-serializable scene spec and its deterministic Pillow rendering.

Everything that decides the hidden click appeal is drawn boldly (a big red price badge, a dark headline band, a
green call-to-action button, swarms of small overlapping strings for clutter, a human figure, a product cut by an
edge) so that a tiny vision tower at 112-224 px can see it. Sizes, fonts and strokes scale with the image size.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from c4u_engine.data.catalog import CATEGORIES
from c4u_engine.errors import BackendUnavailableError, InvalidInputError

BACKGROUNDS = ("solid", "gradient", "stripes", "noise", "room")
CLEAN_BACKGROUNDS = ("solid", "gradient")
LAYOUTS = ("centered", "off_centre", "border", "picture_in_picture")
CROPS = ("none", "left", "right", "top", "bottom")
MIN_SIZE, MAX_SIZE = 32, 1024
CLUTTER_WORDS = (
    "NEW", "HOT", "FREE SHIPPING", "BEST", "LIMITED", "WOW", "BUY 2 GET 1", "TOP", "100%", "DEAL", "TRENDING",
    "ONLY TODAY", "CLICK", "GIFT", "HURRY", "5 STARS", "EXTRA", "BONUS", "VIP", "OMG",
)


@dataclass(frozen=True)
class CreativeSpec:
    """Everything needed to draw one creative. Angles and hues are in degrees; scale is a fraction of the height."""

    category: str  # key of catalog.CATEGORIES: which product shape is drawn
    product_hue: float  # [0, 360)
    product_scale: float  # product height / image height, in [0.2, 0.9]
    crop: str  # "none" or the edge that cuts the product (CROPS)
    angle: float  # product rotation, [-45, 45]; a distractor that does not change appeal
    background: str  # BACKGROUNDS
    background_hue: float  # [0, 360)
    layout: str  # LAYOUTS
    side: int  # -1 or 1: where an off-centre product goes; the model stands on the other side
    selling_point: str = ""  # headline text; "" = none
    price_tag: str = ""  # price badge text; "" = none
    call_to_action: bool = False
    clutter: int = 0  # 0 none, 1 some, 2 heavy: many small overlapping strings
    model: bool = False  # a human figure
    props: int = 0  # 0..3 decorative objects
    seed: int = 0  # texture and clutter placement

    def __post_init__(self) -> None:
        _check(self.category in CATEGORIES, "category", self.category, f"one of {sorted(CATEGORIES)}")
        _check(_real(self.product_hue) and 0.0 <= self.product_hue < 360.0, "product_hue", self.product_hue,
               "a number in [0, 360)")
        _check(_real(self.product_scale) and 0.2 <= self.product_scale <= 0.9, "product_scale", self.product_scale,
               "a number in [0.2, 0.9]")
        _check(self.crop in CROPS, "crop", self.crop, f"one of {CROPS}")
        _check(_real(self.angle) and -45.0 <= self.angle <= 45.0, "angle", self.angle, "a number in [-45, 45]")
        _check(self.background in BACKGROUNDS, "background", self.background, f"one of {BACKGROUNDS}")
        _check(_real(self.background_hue) and 0.0 <= self.background_hue < 360.0, "background_hue",
               self.background_hue, "a number in [0, 360)")
        _check(self.layout in LAYOUTS, "layout", self.layout, f"one of {LAYOUTS}")
        _check(type(self.side) is int and self.side in (-1, 1), "side", self.side, "-1 or 1")
        _check(isinstance(self.selling_point, str) and len(self.selling_point) <= 40, "selling_point",
               self.selling_point, "a string of at most 40 characters")
        _check(isinstance(self.price_tag, str) and len(self.price_tag) <= 8, "price_tag", self.price_tag,
               "a string of at most 8 characters")
        _check(isinstance(self.call_to_action, bool), "call_to_action", self.call_to_action, "a bool")
        _check(type(self.clutter) is int and self.clutter in (0, 1, 2), "clutter", self.clutter, "0, 1 or 2")
        _check(isinstance(self.model, bool), "model", self.model, "a bool")
        _check(type(self.props) is int and 0 <= self.props <= 3, "props", self.props, "an int in 0..3")
        _check(type(self.seed) is int and 0 <= self.seed < 2**63, "seed", self.seed, "an int in [0, 2**63)")

    @property
    def clean_look(self) -> bool:
        """Plain or gradient background, no clutter, no price badge: the look premium products are sold with."""
        return self.background in CLEAN_BACKGROUNDS and self.clutter == 0 and not self.price_tag

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (field order fixed, so the JSON is byte-stable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreativeSpec:
        """Inverse of to_dict; unknown or missing keys raise InvalidInputError."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"CreativeSpec: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInputError(f"CreativeSpec: unknown fields {unknown}; valid fields: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidInputError(f"CreativeSpec: {exc}") from None


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise InvalidInputError(f"CreativeSpec.{name}={value!r}: expected {expected}")


def hue_distance(a: float, b: float) -> float:
    """Circular distance between two hues in degrees, in [0, 180]."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def hsv(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    """RGB 0-255 from a hue in degrees and saturation/value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb((hue % 360.0) / 360.0, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


@functools.lru_cache(maxsize=128)
def font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled default font at a pixel size (no font files needed, Pillow >= 10.1 with FreeType)."""
    loaded = ImageFont.load_default(size=max(6, px))
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise BackendUnavailableError("rendering creatives needs Pillow >= 10.1 built with FreeType: "
                                      "ImageFont.load_default(size=...) returned a fixed-size bitmap font")
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# rendering


def render(spec: CreativeSpec, size: int = 224, *, product: ProductDrawing | None = None) -> Image.Image:
    """Draw the creative as a size x size RGB image. Pure function of (spec, size): same input, same pixels.
    product: how the product is drawn instead (data/creative_usability.py draws defects with it)."""
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(f"render: size={size!r} must be an int in [{MIN_SIZE}, {MAX_SIZE}]")
    if spec.layout != "border":
        return _render_content(spec, size, product)
    # A border frames the whole ad: the content is drawn smaller and set inside the frame.
    thickness = max(3, round(size * 0.07))
    image = Image.new("RGB", (size, size), hsv(spec.background_hue + 180.0, 0.55, 0.35))
    inner = _render_content(spec, size - 2 * thickness, product)
    image.paste(inner, (thickness, thickness))
    draw = ImageDraw.Draw(image)
    draw.rectangle([thickness // 3, thickness // 3, size - 1 - thickness // 3, size - 1 - thickness // 3],
                   outline=(235, 200, 90), width=max(1, thickness // 4))
    return image


@dataclass(frozen=True)
class ProductDrawing:
    """Another way to draw the product into a creative: `paste(image, spec, size)` replaces the product's pasting
    and `layer(category, hue, px)` the close-up of a picture-in-picture inset (None: as usual)."""

    paste: Callable[[Image.Image, CreativeSpec, int], None] | None = None
    layer: Callable[[str, float, int], Image.Image] | None = None


def _render_content(spec: CreativeSpec, size: int, product: ProductDrawing | None = None) -> Image.Image:
    image = _background(spec, size).convert("RGBA")
    if spec.props:
        _draw_props(image, spec, size)
    if spec.model:
        _draw_model(image, spec, size)
    ((product and product.paste) or _paste_product)(image, spec, size)
    if spec.layout == "picture_in_picture":
        _draw_inset(image, spec, size, (product and product.layer) or _product_layer)
    draw = ImageDraw.Draw(image)
    if spec.clutter:
        _draw_clutter(draw, spec, size)
    if spec.selling_point:
        _draw_headline(draw, spec.selling_point, size)
    if spec.price_tag:
        # The badge sits top right, or lower down when a picture-in-picture inset holds that corner.
        inset_right = spec.layout == "picture_in_picture" and spec.side > 0
        _draw_price_badge(draw, spec.price_tag, size, 0.66 if inset_right else 0.32)
    if spec.call_to_action:
        _draw_button(draw, "SHOP NOW", size)
    return image.convert("RGB")


def _background(spec: CreativeSpec, size: int) -> Image.Image:
    h = spec.background_hue
    kind = spec.background
    if kind == "solid":
        return Image.new("RGB", (size, size), hsv(h, 0.25, 0.96))
    if kind == "gradient":
        top, bottom = np.array(hsv(h, 0.10, 1.0), np.float32), np.array(hsv(h, 0.55, 0.78), np.float32)
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        rows = (top * (1 - t) + bottom * t).round().astype(np.uint8)
        return Image.fromarray(np.repeat(rows, size, axis=1), "RGB")
    if kind == "stripes":
        a, b = np.array(hsv(h, 0.25, 0.97), np.uint8), np.array(hsv(h, 0.70, 0.70), np.uint8)
        yy, xx = np.mgrid[0:size, 0:size]
        band = ((xx + yy) // max(2, size // 10)) % 2
        return Image.fromarray(np.where(band[..., None] == 0, a, b).astype(np.uint8), "RGB")
    if kind == "noise":
        # Busy confetti: coarse blocks of random hues near the background hue plus fine grain.
        rng = np.random.default_rng([spec.seed, 0])
        cells = max(4, size // 12)
        hues = (h + rng.uniform(-60, 60, (cells, cells))) % 360 / 360.0
        sats, vals = rng.uniform(0.35, 0.95, (cells, cells)), rng.uniform(0.55, 1.0, (cells, cells))
        rgb = np.stack(np.vectorize(colorsys.hsv_to_rgb)(hues, sats, vals), axis=-1) * 255
        coarse = Image.fromarray(rgb.round().astype(np.uint8), "RGB").resize((size, size), Image.Resampling.NEAREST)
        grain = rng.integers(-25, 26, (size, size, 1), dtype=np.int16)
        return Image.fromarray(np.clip(np.asarray(coarse, np.int16) + grain, 0, 255).astype(np.uint8), "RGB")
    return _room(spec, size)


def _room(spec: CreativeSpec, size: int) -> Image.Image:
    h, s = spec.background_hue, size
    image = Image.new("RGB", (s, s), hsv(h, 0.22, 0.92))
    draw = ImageDraw.Draw(image)
    floor_y = round(s * 0.7)
    draw.rectangle([0, floor_y, s, s], fill=hsv(h, 0.45, 0.58))
    for i in range(1, 5):  # floor boards
        y = floor_y + round(i * (s - floor_y) / 5)
        draw.line([0, y, s, y], fill=hsv(h, 0.5, 0.48), width=max(1, s // 160))
    draw.rectangle([0, floor_y - max(2, s // 60), s, floor_y], fill=hsv(h, 0.1, 0.99))  # skirting board
    # A window on the side opposite the product, so it frames rather than hides it.
    x0 = round(s * (0.62 if spec.side < 0 else 0.08))
    win = [x0, round(s * 0.18), x0 + round(s * 0.3), round(s * 0.5)]
    draw.rectangle(win, fill=(196, 224, 246), outline=(250, 250, 250), width=max(2, s // 60))
    mx, my = (win[0] + win[2]) // 2, (win[1] + win[3]) // 2
    draw.line([mx, win[1], mx, win[3]], fill=(250, 250, 250), width=max(1, s // 90))
    draw.line([win[0], my, win[2], my], fill=(250, 250, 250), width=max(1, s // 90))
    return image


def _product_layer(category: str, hue: float, px: int) -> Image.Image:
    """The product alone on a transparent px x px layer, drawn in unit coordinates scaled to px."""
    layer = Image.new("RGBA", (px, px), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    main, dark, light = hsv(hue, 0.78, 0.88), hsv(hue, 0.85, 0.5), hsv(hue, 0.35, 1.0)
    outline = (30, 30, 30)
    w = max(1, px // 45)

    def p(*xy: float) -> list[float]:
        return [v * (px - 1) for v in xy]

    def poly(*pts: tuple[float, float]) -> list[tuple[float, float]]:
        return [(x * (px - 1), y * (px - 1)) for x, y in pts]

    if category == "bottle":
        d.rounded_rectangle(p(0.25, 0.36, 0.75, 0.99), radius=px * 0.1, fill=main, outline=outline, width=w)
        d.rectangle(p(0.41, 0.19, 0.59, 0.37), fill=light, outline=outline, width=w)
        d.rectangle(p(0.36, 0.04, 0.64, 0.2), fill=(45, 45, 50), outline=outline, width=w)
        d.rectangle(p(0.31, 0.56, 0.69, 0.8), fill=(250, 250, 245))
        d.line(p(0.37, 0.68, 0.63, 0.68), fill=dark, width=w * 2)
    elif category == "box":
        d.polygon(poly((0.06, 0.32), (0.28, 0.12), (0.96, 0.12), (0.74, 0.32)), fill=light, outline=outline)
        d.polygon(poly((0.74, 0.32), (0.96, 0.12), (0.96, 0.76), (0.74, 0.97)), fill=dark, outline=outline)
        d.rectangle(p(0.06, 0.32, 0.74, 0.97), fill=main, outline=outline, width=w)
        d.rectangle(p(0.36, 0.32, 0.44, 0.97), fill=(245, 215, 90))  # ribbon
        d.polygon(poly((0.5, 0.12), (0.58, 0.12), (0.38, 0.32), (0.3, 0.32)), fill=(245, 215, 90))
    elif category == "shoe":
        d.polygon(poly((0.04, 0.78), (0.08, 0.42), (0.36, 0.38), (0.56, 0.58), (0.93, 0.64), (0.98, 0.78)),
                  fill=main, outline=outline)
        d.rounded_rectangle(p(0.02, 0.76, 0.99, 0.9), radius=px * 0.05, fill=(245, 245, 245), outline=outline,
                            width=w)
        for i in range(4):
            x = 0.34 + i * 0.07
            d.line(p(x, 0.44 + i * 0.04, x + 0.06, 0.5 + i * 0.04), fill=(250, 250, 250), width=w * 2)
        d.rectangle(p(0.07, 0.45, 0.16, 0.76), fill=dark)
    elif category == "phone":
        d.rounded_rectangle(p(0.27, 0.02, 0.73, 0.98), radius=px * 0.07, fill=(28, 28, 34), outline=outline, width=w)
        d.rounded_rectangle(p(0.3, 0.08, 0.7, 0.92), radius=px * 0.03, fill=main)
        d.ellipse(p(0.36, 0.2, 0.64, 0.48), fill=light)
        d.ellipse(p(0.47, 0.035, 0.53, 0.065), fill=(90, 90, 100))
    elif category == "bag":
        d.arc(p(0.28, 0.08, 0.72, 0.62), start=180, end=360, fill=dark, width=max(2, px // 14))
        d.polygon(poly((0.14, 0.38), (0.86, 0.38), (0.96, 0.97), (0.04, 0.97)), fill=main, outline=outline)
        d.rectangle(p(0.42, 0.46, 0.58, 0.58), fill=(235, 200, 90), outline=outline, width=w)
        d.line(p(0.1, 0.62, 0.9, 0.62), fill=dark, width=w * 2)
    elif category == "watch":
        d.rectangle(p(0.37, 0.0, 0.63, 1.0), fill=dark, outline=outline, width=w)
        d.ellipse(p(0.17, 0.22, 0.83, 0.88), fill=main, outline=outline, width=w)
        d.ellipse(p(0.25, 0.3, 0.75, 0.8), fill=(250, 250, 250))
        d.line(p(0.5, 0.55, 0.5, 0.36), fill=(20, 20, 20), width=w * 2)
        d.line(p(0.5, 0.55, 0.66, 0.6), fill=(20, 20, 20), width=w * 2)
    elif category == "shirt":
        d.polygon(poly((0.3, 0.06), (0.04, 0.24), (0.14, 0.46), (0.26, 0.38), (0.26, 0.98), (0.74, 0.98),
                       (0.74, 0.38), (0.86, 0.46), (0.96, 0.24), (0.7, 0.06), (0.6, 0.13), (0.4, 0.13)),
                  fill=main, outline=outline)
        d.arc(p(0.38, 0.0, 0.62, 0.2), start=20, end=160, fill=dark, width=max(2, px // 30))
        d.line(p(0.26, 0.38, 0.26, 0.98), fill=dark, width=w)
    else:  # mug
        d.ellipse(p(0.56, 0.34, 0.94, 0.76), outline=main, width=max(3, px // 11))
        d.rounded_rectangle(p(0.12, 0.24, 0.7, 0.95), radius=px * 0.06, fill=main, outline=outline, width=w)
        d.ellipse(p(0.12, 0.18, 0.7, 0.3), fill=light, outline=outline, width=w)
        d.ellipse(p(0.18, 0.2, 0.64, 0.28), fill=(70, 40, 25))  # coffee
    return layer


def _product_centre(spec: CreativeSpec, size: int, extent: tuple[int, int]) -> tuple[float, float]:
    cx, cy = 0.5 * size, 0.56 * size
    if spec.layout == "off_centre":
        cx = (0.5 + 0.2 * spec.side) * size
    ew, eh = extent
    # A cropped product is pushed 40% beyond one edge.
    if spec.crop == "left":
        cx = 0.1 * ew
    elif spec.crop == "right":
        cx = size - 0.1 * ew
    elif spec.crop == "top":
        cy = 0.1 * eh
    elif spec.crop == "bottom":
        cy = size - 0.1 * eh
    return cx, cy


def _paste_product(image: Image.Image, spec: CreativeSpec, size: int) -> None:
    px = max(8, round(spec.product_scale * size))
    layer = _product_layer(spec.category, spec.product_hue, px)
    # A soft floor shadow makes the product sit in the scene rather than float.
    shadow = Image.new("RGBA", (px, px), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).ellipse([px * 0.08, px * 0.9, px * 0.92, px * 1.0], fill=(0, 0, 0, 70))
    layer = Image.alpha_composite(shadow, layer)
    if spec.angle:
        layer = layer.rotate(spec.angle, resample=Image.Resampling.BILINEAR, expand=True)
    cx, cy = _product_centre(spec, size, layer.size)
    # paste with the layer as mask: over-compositing onto the opaque scene, and it clips at the edges.
    image.paste(layer, (round(cx - layer.width / 2), round(cy - layer.height / 2)), layer)


def _draw_inset(image: Image.Image, spec: CreativeSpec, size: int, layer: Callable = _product_layer) -> None:
    """Picture in picture: a framed close-up of the product, top corner on `side` (the model stands opposite)."""
    box = round(size * 0.34)
    x0 = size - box - round(size * 0.03) if spec.side > 0 else round(size * 0.03)
    y0 = round(size * 0.18)
    zoom = layer(spec.category, spec.product_hue, round(box * 1.25))
    inset = Image.new("RGBA", (box, box), (252, 252, 252, 255))
    off = (box - zoom.width) // 2
    inset.alpha_composite(zoom.crop((-off, -off, -off + box, -off + box)))
    image.alpha_composite(inset, (x0, y0))
    ImageDraw.Draw(image).rectangle([x0, y0, x0 + box - 1, y0 + box - 1], outline=(40, 40, 40),
                                    width=max(2, size // 70))


def _draw_model(image: Image.Image, spec: CreativeSpec, size: int) -> None:
    """A simple standing human figure on the side opposite an off-centre product."""
    d = ImageDraw.Draw(image)
    s = size
    cx = s * (0.5 - 0.31 * spec.side)
    top, height = s * 0.2, s * 0.78
    skin, hair = (224, 178, 140), (60, 40, 30)
    shirt, trousers = hsv(spec.product_hue + 150.0, 0.55, 0.55), (45, 60, 110)
    head = height * 0.11
    limb = max(2, round(s * 0.035))
    d.ellipse([cx - head, top, cx + head, top + 2 * head], fill=skin)
    d.chord([cx - head, top - head * 0.15, cx + head, top + head * 1.2], start=180, end=360, fill=hair)
    sh_y, hip_y = top + 2.2 * head, top + height * 0.52
    d.line([cx - height * 0.12, sh_y + 2, cx - height * 0.17, hip_y], fill=skin, width=limb)  # arms
    d.line([cx + height * 0.12, sh_y + 2, cx + height * 0.17, hip_y], fill=skin, width=limb)
    d.rounded_rectangle([cx - height * 0.12, sh_y, cx + height * 0.12, hip_y], radius=s * 0.03, fill=shirt)
    foot_y = top + height
    d.rectangle([cx - height * 0.1, hip_y, cx - height * 0.01, foot_y], fill=trousers)
    d.rectangle([cx + height * 0.01, hip_y, cx + height * 0.1, foot_y], fill=trousers)
    d.ellipse([cx - height * 0.13, foot_y - s * 0.02, cx - height * 0.005, foot_y + s * 0.015], fill=(20, 20, 20))
    d.ellipse([cx + height * 0.005, foot_y - s * 0.02, cx + height * 0.13, foot_y + s * 0.015], fill=(20, 20, 20))


def _draw_props(image: Image.Image, spec: CreativeSpec, size: int) -> None:
    """Up to three small decorative objects on the floor line: a plant, a stack of books, a ball."""
    d = ImageDraw.Draw(image)
    rng = np.random.default_rng([spec.seed, 2])
    kinds = rng.permutation(3)[: spec.props]
    slots = (0.13, 0.87, 0.3) if spec.side > 0 else (0.87, 0.13, 0.7)
    for kind, x in zip(kinds, slots):
        cx, base, r = x * size, 0.96 * size, 0.1 * size
        if kind == 0:  # plant
            d.polygon([(cx - r * 0.5, base - r), (cx + r * 0.5, base - r), (cx + r * 0.35, base),
                       (cx - r * 0.35, base)], fill=(190, 100, 60))
            for dx, dy in ((-0.45, -1.8), (0.45, -1.8), (0.0, -2.3)):
                d.ellipse([cx + dx * r - r * 0.45, base + dy * r - r * 0.6, cx + dx * r + r * 0.45,
                           base + dy * r + r * 0.6], fill=(50, 150, 70))
        elif kind == 1:  # books
            for i, colour in enumerate(((170, 40, 40), (40, 90, 160), (220, 170, 50))):
                y = base - (i + 1) * r * 0.42
                d.rectangle([cx - r * (0.9 - 0.1 * i), y, cx + r * (0.9 - 0.1 * i), y + r * 0.4], fill=colour,
                            outline=(30, 30, 30))
        else:  # ball
            d.ellipse([cx - r * 0.8, base - r * 1.6, cx + r * 0.8, base], fill=(240, 240, 240), outline=(30, 30, 30),
                      width=max(1, size // 110))
            d.arc([cx - r * 0.8, base - r * 1.6, cx + r * 0.8, base], start=200, end=340, fill=(220, 60, 60),
                  width=max(2, size // 45))


def _draw_clutter(draw: ImageDraw.ImageDraw, spec: CreativeSpec, size: int) -> None:
    """Many small strings in random colours, overlapping each other and the product; some on sticker boxes."""
    rng = np.random.default_rng([spec.seed, 1])
    count = 9 if spec.clutter == 1 else 22
    for _ in range(count):
        word = CLUTTER_WORDS[int(rng.integers(len(CLUTTER_WORDS)))]
        f = font(round(size * rng.uniform(0.045, 0.075)))
        x, y = rng.uniform(-0.05, 0.8) * size, rng.uniform(0.0, 0.92) * size
        colour = hsv(float(rng.uniform(0, 360)), 0.9, float(rng.uniform(0.45, 1.0)))
        if rng.random() < 0.35:
            box = draw.textbbox((x, y), word, font=f)
            draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=hsv(float(rng.uniform(0, 360)),
                                                                                      0.6, 1.0))
        draw.text((x, y), word, font=f, fill=colour)


def _fit_font(text: str, max_width: float, max_px: int) -> ImageFont.FreeTypeFont:
    f = font(max_px)
    width = f.getlength(text)
    if width > max_width:
        f = font(int(max_px * max_width / width))
    return f


def _draw_headline(draw: ImageDraw.ImageDraw, text: str, size: int) -> None:
    """The selling point: large white text on a dark band across the top (legible: big and high contrast)."""
    band = round(size * 0.15)
    draw.rectangle([0, 0, size, band], fill=(24, 24, 36))
    f = _fit_font(text, size * 0.9, round(size * 0.1))
    draw.text((size / 2, band / 2), text, font=f, fill=(255, 255, 255), anchor="mm")


def _draw_price_badge(draw: ImageDraw.ImageDraw, text: str, size: int, y: float) -> None:
    """A big red starburst with yellow text on the right, centred at height y (a fraction of the size)."""
    cx, cy, r = size * 0.82, size * y, size * 0.15
    points = []
    for i in range(24):
        radius = r if i % 2 == 0 else r * 0.8
        a = math.pi * i / 12
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    draw.polygon(points, fill=(222, 28, 36))
    draw.ellipse([cx - r * 0.72, cy - r * 0.72, cx + r * 0.72, cy + r * 0.72], outline=(255, 220, 40),
                 width=max(1, size // 100))
    f = _fit_font(text, r * 1.3, round(size * 0.09))
    draw.text((cx, cy), text, font=f, fill=(255, 230, 40), anchor="mm")


def _draw_button(draw: ImageDraw.ImageDraw, text: str, size: int) -> None:
    """The call to action: a green rounded button at the bottom centre."""
    box = [size * 0.27, size * 0.84, size * 0.73, size * 0.96]
    draw.rounded_rectangle(box, radius=size * 0.04, fill=(24, 150, 70), outline=(255, 255, 255),
                           width=max(1, size // 110))
    f = _fit_font(text, size * 0.4, round(size * 0.07))
    draw.text((size / 2, size * 0.9), text, font=f, fill=(255, 255, 255), anchor="mm")
