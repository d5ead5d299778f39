"""Load images from paths, bytes, PIL images or arrays into validated RGB uint8 pixels with a content hash.

Conversions follow transformers' convert_to_rgb (what Qwen's processor does): transparency is composited on white
with Pillow's alpha_composite, everything else goes through Pillow's convert("RGB"); 16-bit grayscale is scaled to
8 bits; animated files give their first frame. EXIF orientation is NOT applied (transformers does not either).
The pixel budget is checked from the header, before decoding.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from c4u_engine.errors import C4UError, ImageTooLargeError, InvalidImageError, InvalidInputError

DEFAULT_MAX_PIXELS = 50_000_000
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels, read-only; equal (and hashed) by content, whatever the source."""

    pixels: np.ndarray = field(compare=False, repr=False)  # [H, W, 3] uint8, C-contiguous RGB, read-only
    content_hash: str  # sha256 hex over shape + pixel bytes
    source: str = field(compare=False)  # short description for error messages

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def content_hash(pixels: np.ndarray) -> str:
    """sha256 hex of an [H, W, 3] uint8 array: its shape, then its bytes in C order."""
    digest = hashlib.sha256(f"rgb8:{pixels.shape[0]}x{pixels.shape[1]}x{pixels.shape[2]}:".encode())
    digest.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return digest.hexdigest()


def load_image(obj: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode `obj` (path, bytes, PIL.Image.Image, or uint8 array [H, W], [H, W, 3] or [H, W, 4]) into RGB pixels.

    Raises InvalidImageError (missing or unreadable file, directory, empty/truncated/non-image data, zero size),
    ImageTooLargeError (more than max_pixels pixels, checked before decoding), InvalidInputError (wrong array dtype
    or channel count, unsupported object type).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InvalidInputError(f"load_image: max_pixels must be a positive int, got {max_pixels!r}")
    if isinstance(obj, LoadedImage):
        _check_budget(obj.width, obj.height, obj.source, max_pixels)
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.exists():
            raise InvalidImageError(f"image file not found: {path}")
        if path.is_dir():
            raise InvalidImageError(f"image path is a directory, not a file: {path}")
        return _decode(lambda: Image.open(path), str(path), max_pixels)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        source = f"bytes[{len(data)}]"
        if not data:
            raise InvalidImageError("image bytes are empty")
        return _decode(lambda: Image.open(io.BytesIO(data)), source, max_pixels)
    if isinstance(obj, Image.Image):
        return _decode(lambda: _Borrowed(obj), "PIL.Image", max_pixels)
    if isinstance(obj, np.ndarray):
        return _from_array(obj, max_pixels)
    raise InvalidInputError(
        f"load_image: unsupported image type {type(obj).__name__}; "
        "expected a path, bytes, PIL.Image.Image or a uint8 numpy array"
    )


class _Borrowed:
    """Context manager handing out a caller's PIL image without closing it."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image

    def __enter__(self) -> Image.Image:
        return self.image

    def __exit__(self, *exc: object) -> None:
        return None


def _check_budget(width: int, height: int, source: str, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError(f"image {source} has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image {source} is {width}x{height} = {width * height} pixels, over the budget of {max_pixels}"
        )


def _decode(opener: Callable[[], Any], source: str, max_pixels: int) -> LoadedImage:
    # Pillow warns about decompression bombs (we check the budget ourselves), odd EXIF or palette transparency;
    # pytest and callers treat warnings as errors, so they are silenced here and real failures raise below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with opener() as image:
                _check_budget(image.width, image.height, source, max_pixels)
                image.load()  # decodes frame 0 of animated files; truncated data raises here
                pixels = _to_rgb(image)
        except C4UError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"image {source} is over the pixel budget of {max_pixels}: {exc}") from exc
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, ...
            raise InvalidImageError(f"cannot decode image {source}: {type(exc).__name__}: {exc}") from exc
    return _finish(pixels, source)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 RGB from any Pillow mode (see the module docstring for the rules)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.int64)
        gray = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    bands = image.getbands()
    if "A" in bands or "a" in bands or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _from_array(array: np.ndarray, max_pixels: int) -> LoadedImage:
    source = f"ndarray{tuple(array.shape)}"
    if array.dtype != np.uint8:
        raise InvalidInputError(f"image array must be uint8, got {array.dtype} (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InvalidInputError(
            f"image array must be [H, W] gray, [H, W, 3] RGB or [H, W, 4] RGBA, got shape {tuple(array.shape)}"
        )
    _check_budget(int(array.shape[1]), int(array.shape[0]), source, max_pixels)
    if array.ndim == 2:
        pixels = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:  # same compositing as a PIL RGBA image, so both give the same hash
        pixels = _to_rgb(Image.fromarray(np.ascontiguousarray(array)))
    else:
        pixels = array
    return _finish(pixels, source)


def _finish(pixels: np.ndarray, source: str) -> LoadedImage:
    # Always an owned, read-only copy: the hash must keep describing the pixels.
    owned = np.array(pixels, dtype=np.uint8, order="C", copy=True)
    owned.flags.writeable = False
    if owned.ndim != 3 or owned.shape[2] != 3:
        raise InvalidImageError(f"image {source} decoded to shape {owned.shape}, expected [H, W, 3]")
    return LoadedImage(pixels=owned, content_hash=content_hash(owned), source=source)
