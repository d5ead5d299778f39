"""imaging.load_image: typed errors for every bad input, mode conversions, content hashes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from c4u_engine.errors import ImageTooLargeError, InvalidImageError, InvalidInputError
from c4u_engine.imaging import LoadedImage, load_image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB and carries no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


# ---- bad inputs -------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="not found.*nope.png"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(str(tmp_path))


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    data = encode(Image.fromarray(noise(64, 48)), fmt)
    with pytest.raises(InvalidImageError, match=r"bytes\[") as info:
        load_image(data[: len(data) // 2])
    assert "cannot decode" in str(info.value)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="cut"):
        load_image(path)


def test_text_file_and_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(InvalidImageError, match="notes.png"):
        load_image(path)
    with pytest.raises(InvalidImageError, match=r"bytes\[8\]"):
        load_image(bytearray(b"\x00garbage"))


def test_bomb_header_beyond_pillow_limit() -> None:
    # 10^10 pixels declared: Pillow itself refuses it at open (DecompressionBombError); we report it typed.
    with pytest.raises(ImageTooLargeError, match="50000000"):
        load_image(png_header_only(100_000, 100_000))


def test_bomb_header_over_budget_is_refused_before_decoding() -> None:
    # 10^8 pixels: Pillow only warns (warnings are errors under pytest); our budget refuses it without decoding,
    # and the message names the size and the budget.
    with pytest.raises(ImageTooLargeError, match=r"10000x10000 = 100000000 pixels.*50000000"):
        load_image(png_header_only(10_000, 10_000))


def test_configurable_budget() -> None:
    data = encode(Image.fromarray(noise(20, 20)), "PNG")
    with pytest.raises(ImageTooLargeError, match="399"):
        load_image(data, max_pixels=399)
    assert load_image(data, max_pixels=400).pixels.shape == (20, 20, 3)
    with pytest.raises(ImageTooLargeError):
        load_image(noise(20, 20), max_pixels=399)
    with pytest.raises(ImageTooLargeError):
        load_image(Image.fromarray(noise(20, 20)), max_pixels=399)
    with pytest.raises(InvalidInputError, match="max_pixels"):
        load_image(data, max_pixels=0)


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (0, 0, 4)])
def test_zero_size_arrays(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImageError, match="zero size"):
        load_image(np.zeros(shape, np.uint8))


def test_zero_size_pil_image() -> None:
    with pytest.raises(InvalidImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int64, bool])
def test_wrong_dtype(dtype) -> None:
    with pytest.raises(InvalidInputError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype))


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (2, 4, 4, 3), (12,)])
def test_wrong_array_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("obj", [None, 42, 3.5, [[0, 0, 0]], {"path": "x.png"}, object()])
def test_unsupported_types(obj) -> None:
    with pytest.raises(InvalidInputError, match="unsupported image type"):
        load_image(obj)


# ---- conversions ------------------------------------------------------------------------------------------------


def test_rgb_roundtrip_is_exact_for_every_source(tmp_path: Path) -> None:
    pixels = noise(17, 23)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    loaded = [load_image(path), load_image(str(path)), load_image(path.read_bytes()),
              load_image(Image.fromarray(pixels)), load_image(pixels)]
    for image in loaded:
        assert image.pixels.dtype == np.uint8 and image.pixels.flags.c_contiguous
        np.testing.assert_array_equal(image.pixels, pixels)
        assert image.content_hash == loaded[0].content_hash
    assert loaded[0].source == str(path) and loaded[2].source.startswith("bytes[")
    assert loaded[3].source == "PIL.Image" and loaded[4].source.startswith("ndarray")


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[0, :, 3] = (0, 128, 255)
    rgba[1, :, 3] = 255
    for source in (Image.fromarray(rgba), rgba, encode(Image.fromarray(rgba), "PNG")):
        out = load_image(source).pixels.astype(int)
        np.testing.assert_array_equal(out[0, 0], (255, 255, 255))  # transparent -> white
        np.testing.assert_array_equal(out[0, 2], (200, 40, 0))  # opaque -> itself
        expected_half = np.array([200, 40, 0]) * 128 / 255 + 255 * (1 - 128 / 255)
        assert np.abs(out[0, 1] - expected_half).max() <= 1  # half transparent -> halfway to white
        np.testing.assert_array_equal(out[1], np.tile((200, 40, 0), (3, 1)))


def test_la_and_palette_transparency() -> None:
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8))
    assert la.mode == "LA"
    np.testing.assert_array_equal(load_image(la).pixels[0], [[255, 255, 255], [10, 10, 10]])
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # index 0 (red) is transparent
    for source in (palette, encode(palette, "PNG", transparency=0), encode(palette, "GIF", transparency=0)):
        np.testing.assert_array_equal(load_image(source).pixels[0], [[255, 255, 255], [0, 0, 255]])


def test_cmyk_grayscale_and_bilevel() -> None:
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    np.testing.assert_array_equal(load_image(encode(cmyk, "JPEG", quality=100)).pixels.shape, (1, 2, 3))
    np.testing.assert_array_equal(load_image(cmyk).pixels[0], [[255, 255, 255], [255, 0, 0]])
    gray = np.array([[0, 77, 255]], np.uint8)
    for source in (Image.fromarray(gray), gray, gray[:, :, None]):
        np.testing.assert_array_equal(load_image(source).pixels[0], np.repeat(gray[0][:, None], 3, axis=1))
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    np.testing.assert_array_equal(load_image(encode(bilevel, "PNG")).pixels[0], [[0, 0, 0], [255, 255, 255]])


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    deep = np.array([[0, 256, 32896, 65535]], np.uint16)
    image = Image.fromarray(deep)
    assert image.mode.startswith("I;16")
    for source in (image, encode(image, "PNG")):
        np.testing.assert_array_equal(load_image(source).pixels[0, :, 0], [0, 1, 128, 255])
    wide = Image.fromarray(np.array([[0, 65535, 70000]], np.int32))
    assert wide.mode == "I"
    np.testing.assert_array_equal(load_image(wide).pixels[0, :, 1], [0, 255, 255])


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (4, 3), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    np.testing.assert_array_equal(load_image(data).pixels, np.full((3, 4, 3), (255, 0, 0), np.uint8))
    apng = encode(frames[1], "PNG", save_all=True, append_images=[frames[2]])
    np.testing.assert_array_equal(load_image(apng).pixels, np.full((3, 4, 3), (0, 255, 0), np.uint8))


def test_exif_orientation_is_not_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": transformers ignores it, so do we
    data = encode(Image.fromarray(noise(10, 30)), "JPEG", exif=exif)
    assert load_image(data).pixels.shape == (10, 30, 3)


# ---- content hash and ownership ---------------------------------------------------------------------------------


def test_content_hash_tracks_pixels_and_shape() -> None:
    pixels = noise(6, 2)
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    same_bytes_other_shape = np.ascontiguousarray(pixels).reshape(2, 6, 3)
    hashes = {load_image(x).content_hash for x in (pixels, changed, same_bytes_other_shape)}
    assert len(hashes) == 3
    assert load_image(pixels) == load_image(pixels.copy()) and load_image(pixels) != load_image(changed)
    assert len({load_image(pixels), load_image(Image.fromarray(pixels))}) == 1


def test_pixels_are_an_owned_read_only_copy() -> None:
    pixels = noise(5, 5)
    loaded = load_image(pixels)
    pixels[:] = 0
    assert loaded.pixels.any() and not loaded.pixels.flags.writeable
    with pytest.raises(ValueError):
        loaded.pixels[0, 0, 0] = 1
    assert load_image(loaded) is loaded and isinstance(loaded, LoadedImage)
    assert (loaded.height, loaded.width) == (5, 5)
