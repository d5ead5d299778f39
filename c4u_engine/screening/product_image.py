"""Load the product cut-out for screening, keeping its transparency (imaging.load_image would flatten it on white).

A cut-out without an alpha channel (a JPEG product shot on white) is given one: near-white pixels count as
background, the rest as the product.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from c4u_engine.errors import ProductImageError
from c4u_engine.imaging import DEFAULT_MAX_PIXELS

WHITE_TOLERANCE = 12  # a pixel within this of 255 on every channel is a white background


def load_product_image(obj: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGBA PIL image from a path, bytes, a PIL image or a uint8 array [H, W, 3|4]; ProductImageError if not."""
    if obj is None:
        raise ProductImageError("screening in this mode needs the product image (the cut-out): pass product_image=")
    try:
        if isinstance(obj, Image.Image):
            image = obj.copy()
        elif isinstance(obj, np.ndarray):
            if obj.dtype != np.uint8 or obj.ndim != 3 or obj.shape[2] not in (3, 4):
                raise ProductImageError(f"product image array must be uint8 [H, W, 3|4], got {obj.dtype} "
                                        f"{list(obj.shape)}")
            image = Image.fromarray(np.ascontiguousarray(obj), "RGBA" if obj.shape[2] == 4 else "RGB")
        elif isinstance(obj, (str, Path, bytes, bytearray)):
            src = io.BytesIO(bytes(obj)) if isinstance(obj, (bytes, bytearray)) else obj
            with Image.open(src) as im:
                if im.width * im.height > max_pixels:
                    raise ProductImageError(f"product image {im.width}x{im.height} is over {max_pixels} pixels")
                im.load()
                image = im.copy()
        else:
            raise ProductImageError(f"product image must be a path, bytes, PIL image or array, not "
                                    f"{type(obj).__name__}")
    except ProductImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        what = str(obj)[:200] if isinstance(obj, (str, Path)) else type(obj).__name__
        raise ProductImageError(f"cannot read the product image {what}: {exc}") from None
    if image.width == 0 or image.height == 0:
        raise ProductImageError("the product image is empty (zero width or height)")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    rgba = image.convert("RGBA")
    if not has_alpha:
        rgb = np.asarray(rgba)[..., :3]
        alpha = np.where((255 - rgb.astype(np.int16)).max(-1) > WHITE_TOLERANCE, 255, 0).astype(np.uint8)
        rgba.putalpha(Image.fromarray(alpha))
    if rgba.getchannel("A").getbbox() is None:
        raise ProductImageError("the product image is fully transparent (or all white): no product to compare with")
    return rgba
