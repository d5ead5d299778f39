"""Qwen2-VL image preprocessing parameters and smart_resize (the planning half of preprocessing, no pixels).

Mirrors transformers' Qwen2VLImageProcessorPil defaults and its smart_resize
(transformers/models/qwen2_vl/image_processing_pil_qwen2_vl.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from c4u_engine.errors import InvalidImageError, InvalidInputError, ModelFormatError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200  # smart_resize refuses images more elongated than this
PIL_BICUBIC = 3  # the `resample` value of a preprocessor_config.json that asks for BICUBIC

_INT_FIELDS = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size")


def _field_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid PreprocessParams.<name>, or None."""
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"must be a positive int, got {value!r}"
    elif name in ("image_mean", "image_std"):
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        if not ok:
            return f"must be 3 finite numbers (one per RGB channel), got {value!r}"
        if name == "image_std" and min(value) <= 0:
            return f"must be positive, got {value!r}"
    elif name == "rescale_factor":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return f"must be a positive finite number, got {value!r}"
    return None


@dataclass(frozen=True)
class PreprocessParams:
    """How images become Qwen2-VL patches: pixel bounds of smart_resize, patch geometry, normalization."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise InvalidInputError(f"PreprocessParams.{f.name} {problem}")
        if self.min_pixels > self.max_pixels:
            raise InvalidInputError(
                f"PreprocessParams.min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})"
            )
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        object.__setattr__(self, "rescale_factor", float(self.rescale_factor))

    @property
    def factor(self) -> int:
        """Side lengths of resized images are multiples of this (patch_size * merge_size)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Floats per output row: 3 * temporal_patch_size * patch_size**2."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    def key(self) -> tuple:
        """Hashable identity of these parameters, for cache keys."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def native_kwargs(self) -> dict[str, Any]:
        """The configuration arguments of the _C.preprocess_* bindings."""
        return {
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "rescale_factor": self.rescale_factor,
            "mean": self.image_mean,
            "std": self.image_std,
        }

    @classmethod
    def from_preprocessor_config(cls, source: str | os.PathLike | Mapping[str, Any]) -> PreprocessParams:
        """Read a Hugging Face preprocessor_config.json (a file, a checkpoint directory holding one, or its dict).

        Pixel bounds come from top-level `min_pixels`/`max_pixels`, else from `size` as
        {"min_pixels", "max_pixels"} or {"shortest_edge", "longest_edge"} (top-level wins, like transformers).
        Raises ModelFormatError naming the file and key for unreadable files and invalid values.
        """
        config, where = _read_config(source)
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        size = config.get("size")
        if size is not None:
            if not isinstance(size, Mapping):
                raise ModelFormatError(f"{where}: key 'size' must be an object, got {size!r}")
            for name, keys in (("min_pixels", ("min_pixels", "shortest_edge")),
                               ("max_pixels", ("max_pixels", "longest_edge"))):
                key = next((k for k in keys if size.get(k) is not None), None)
                if key is not None:
                    values[name], origin[name] = size[key], f"size.{key}"
            if not values:
                raise ModelFormatError(
                    f"{where}: key 'size' has none of min_pixels/max_pixels/shortest_edge/longest_edge: {dict(size)}"
                )
        for f in fields(cls):
            if config.get(f.name) is not None:
                values[f.name], origin[f.name] = config[f.name], f.name
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if config.get(flag) is False:
                raise ModelFormatError(f"{where}: key {flag!r} is false; only Qwen's full pipeline is supported")
        if config.get("resample", PIL_BICUBIC) != PIL_BICUBIC:
            raise ModelFormatError(f"{where}: key 'resample' is {config['resample']!r}; only BICUBIC (3) is supported")
        for name, value in values.items():
            problem = _field_problem(name, value)
            if problem:
                raise ModelFormatError(f"{where}: key {origin[name]!r} {problem}")
        try:
            return cls(**values)
        except InvalidInputError as exc:  # cross-field checks (min_pixels <= max_pixels)
            raise ModelFormatError(f"{where}: {exc}") from exc


def _read_config(source: str | os.PathLike | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "preprocessor config (dict)"
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"preprocessor config must be a path or a dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / "preprocessor_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"cannot read preprocessor config {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config, str(path)


DEFAULT_PARAMS = PreprocessParams()


def smart_resize(height: int, width: int, params: PreprocessParams = DEFAULT_PARAMS) -> tuple[int, int]:
    """Resized (height, width): multiples of params.factor, about min_pixels..max_pixels pixels, aspect ratio kept.

    Same arithmetic as transformers' qwen2_vl smart_resize, but raises InvalidImageError where it raises ValueError
    (aspect ratio above 200), and for a side shorter than about half the factor, which it rounds to 0: that skips
    its max_pixels check and can return more than max_pixels pixels (only under small budgets; never with the
    defaults). transformers' deliberate overshoot (sides clamped up to the factor) is kept.
    """
    if isinstance(height, bool) or isinstance(width, bool) or not isinstance(height, int) or not isinstance(width, int):
        raise InvalidImageError(f"image size must be two ints, got {height!r} x {width!r}")
    if height < 1 or width < 1:
        raise InvalidImageError(f"image size {height}x{width} is empty")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"image {height}x{width} has aspect ratio {ratio:.1f}; Qwen2-VL accepts at most {MAX_ASPECT_RATIO}"
        )
    factor, min_pixels, max_pixels = params.factor, params.min_pixels, params.max_pixels
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    rounded_to_zero = h_bar == 0 or w_bar == 0
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor or (rounded_to_zero and h_bar * w_bar > max_pixels):
        raise InvalidImageError(
            f"image {height}x{width} has a side under half of {factor} pixels; smart_resize would make it "
            f"{h_bar}x{w_bar}, over max_pixels={max_pixels}"
        )
    return h_bar, w_bar


def grid_thw_for(height: int, width: int, params: PreprocessParams = DEFAULT_PARAMS) -> tuple[int, int, int]:
    """(t, h, w) patch grid that preprocess gives an image of this size, without computing pixels."""
    h, w = smart_resize(height, width, params)
    return 1, h // params.patch_size, w // params.patch_size
