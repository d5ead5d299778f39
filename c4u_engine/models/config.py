"""Validated Qwen2.5-VL configuration, read from a checkpoint's config.json.

Two layouts exist in the wild and both are accepted:
- classic (the Hub's Qwen2.5-VL-*-Instruct): text fields at the top level,
  "rope_scaling": {"type": "mrope", "mrope_section": [...]}, "vision_config" with "in_chans";
- transformers 5: text fields under "text_config", rope under "rope_parameters" (or "rope_scaling").
Where a file carries both (transformers 4.5x wrote text_config and kept the flat copy), text_config wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c4u_engine.errors import ModelFormatError, UnsupportedModelError

SUPPORTED_MODEL_TYPE = "qwen2_5_vl"
SUPPORTED_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)
SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")
SUPPORTED_ACTIVATIONS = ("silu", "swish", "gelu", "gelu_pytorch_tanh", "quick_gelu")  # layers.ACTIVATIONS
_MISSING = object()


@dataclass(frozen=True)
class VisionConfig:
    """The ViT of Qwen2.5-VL: window attention blocks plus a few full-attention blocks, then a 2x2 patch merger."""

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    in_chans: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    window_size: int  # in pixels; windows are window_size // (patch_size * spatial_merge_size) merged tokens wide
    fullatt_block_indexes: tuple[int, ...]
    out_hidden_size: int
    hidden_act: str
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: in_chans * temporal_patch_size * patch_size**2 (1176 for Qwen)."""
        return self.in_chans * self.temporal_patch_size * self.patch_size * self.patch_size

    @property
    def merge_unit(self) -> int:
        """Patches merged into one language token (4 for a 2x2 merge)."""
        return self.spatial_merge_size * self.spatial_merge_size


@dataclass(frozen=True)
class TextConfig:
    """The Qwen2 decoder with multimodal rotary embeddings (M-RoPE)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int]  # rotary frequencies given to the (temporal, height, width) axes
    max_position_embeddings: int
    tie_word_embeddings: bool
    hidden_act: str


@dataclass(frozen=True)
class ModelConfig:
    """Everything c4u_engine needs to know about a Qwen2.5-VL checkpoint."""

    vision: VisionConfig
    text: TextConfig
    image_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    video_token_id: int
    eos_token_ids: tuple[int, ...]
    model_type: str
    architectures: tuple[str, ...]
    torch_dtype: str

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        """Read and validate config.json (a file, or a checkpoint directory holding one).

        eos_token_ids joins config.json's eos_token_id with generation_config.json's when that file sits beside
        it (the Hub's Qwen2.5-VL lists its second stop token only there).
        Raises ModelFormatError (missing file, bad JSON, missing or inconsistent field: the file and field are
        named) or UnsupportedModelError (another model_type or architecture).
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ModelFormatError(f"{path}: config file not found")
        raw = _read_json(path)
        return _parse(raw, path, _generation_eos(path.parent / "generation_config.json"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def _generation_eos(path: Path) -> list[int]:
    if not path.is_file():
        return []
    return _eos_list(_read_json(path).get("eos_token_id"), path, "eos_token_id")


def _eos_list(value: Any, path: Path, field: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ModelFormatError(f"{path}: field {field!r} must be a token id or a list of them, found {value!r}")
    return values


class _Fields:
    """Typed access to one JSON object, with errors naming the file and the dotted field.

    With a fallback, fields absent here are looked up there (text_config first, then the flat top level).
    """

    def __init__(self, data: dict[str, Any], path: Path, prefix: str = "", fallback: _Fields | None = None) -> None:
        self.data, self.path, self.prefix, self.fallback = data, path, prefix, fallback

    def _owner(self, field: str) -> _Fields:
        if self.data.get(field) is None and self.fallback is not None and self.fallback.data.get(field) is not None:
            return self.fallback
        return self

    def where(self, field: str) -> str:
        """The dotted name of field in the file, e.g. 'text_config.hidden_size'."""
        return self._owner(field).prefix + field

    def fail(self, field: str, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: field {self.where(field)!r} {problem}")

    def get(self, field: str, default: Any = _MISSING) -> Any:
        value = self._owner(field).data.get(field)
        if value is not None:
            return value
        if default is _MISSING:
            raise self.fail(field, "is missing")
        return default

    def int(self, field: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.get(field, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(field, f"must be an integer >= {minimum}, found {value!r}")
        return value

    def float(self, field: str, default: Any = _MISSING) -> float:
        value = self.get(field, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise self.fail(field, f"must be a positive number, found {value!r}")
        return float(value)

    def act(self, field: str) -> str:
        value = self.get(field, "silu")
        if value not in SUPPORTED_ACTIVATIONS:
            raise self.fail(field, f"is {value!r}; supported activations: {list(SUPPORTED_ACTIVATIONS)}")
        return value


def _parse(raw: dict[str, Any], path: Path, generation_eos: list[int]) -> ModelConfig:
    top = _Fields(raw, path)
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type == "qwen2_vl":
        raise UnsupportedModelError(
            f"{path}: model_type 'qwen2_vl' (Qwen2-VL) is not supported: its vision tower differs "
            f"(no window attention, LayerNorm); c4u_engine runs model_type {SUPPORTED_MODEL_TYPE!r} (Qwen2.5-VL)"
        )
    if model_type != SUPPORTED_MODEL_TYPE:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} (architectures {architectures}) is not supported; "
            f"c4u_engine runs model_type {SUPPORTED_MODEL_TYPE!r} ({SUPPORTED_ARCHITECTURES[0]})"
        )
    if not isinstance(architectures, list) or (
        architectures and not any(a in SUPPORTED_ARCHITECTURES for a in architectures)
    ):
        raise UnsupportedModelError(
            f"{path}: architectures {architectures!r} are not supported; expected {list(SUPPORTED_ARCHITECTURES)}"
        )

    text_raw = raw.get("text_config")
    if text_raw is not None and not isinstance(text_raw, dict):
        raise top.fail("text_config", "must be an object")
    # text_config wins where both it and the flat (classic) copy hold a field.
    text = _Fields(text_raw, path, "text_config.", fallback=top) if text_raw is not None else top
    vision_raw = top.get("vision_config")
    if not isinstance(vision_raw, dict):
        raise top.fail("vision_config", "must be an object")
    vision = _Fields(vision_raw, path, "vision_config.")

    text_cfg = _parse_text(text, top)
    vision_cfg = _parse_vision(vision)
    if vision_cfg.out_hidden_size != text_cfg.hidden_size:
        raise vision.fail(
            "out_hidden_size", f"is {vision_cfg.out_hidden_size} but the language hidden_size is {text_cfg.hidden_size}"
        )

    token_ids = {}
    for name in ("image_token_id", "vision_start_token_id", "vision_end_token_id", "video_token_id"):
        token_ids[name] = top.int(name, minimum=0)
        if token_ids[name] >= text_cfg.vocab_size:
            raise top.fail(name, f"is {token_ids[name]}, outside the vocabulary (vocab_size {text_cfg.vocab_size})")

    eos = _eos_list(text.get("eos_token_id", None), path, text.where("eos_token_id"))
    eos += [t for t in generation_eos if t not in eos]
    dtype = raw.get("torch_dtype") or raw.get("dtype") or "float32"
    if dtype not in SUPPORTED_DTYPES:
        raise top.fail("torch_dtype", f"is {dtype!r}; supported: {list(SUPPORTED_DTYPES)}")

    return ModelConfig(
        vision=vision_cfg,
        text=text_cfg,
        eos_token_ids=tuple(eos),
        model_type=model_type,
        architectures=tuple(architectures),
        torch_dtype=dtype,
        **token_ids,
    )


def _parse_text(text: _Fields, top: _Fields) -> TextConfig:
    hidden = text.int("hidden_size")
    heads = text.int("num_attention_heads")
    kv_heads = text.int("num_key_value_heads", heads)
    if hidden % heads:
        raise text.fail("num_attention_heads", f"({heads}) must divide hidden_size ({hidden})")
    if heads % kv_heads:
        raise text.fail("num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads})")
    head_dim = hidden // heads
    # transformers derives head_dim from hidden_size / heads; a different explicit head_dim cannot be honoured.
    if text.get("head_dim", head_dim) != head_dim:
        raise text.fail("head_dim", f"is {text.get('head_dim')} but hidden_size / num_attention_heads is {head_dim}")
    if text.get("use_sliding_window", False):
        raise UnsupportedModelError(f"{text.path}: use_sliding_window=true is not supported (Qwen2.5-VL uses false)")

    rope_key = next((k for k in ("rope_parameters", "rope_scaling") if text.get(k, None) is not None), None)
    rope_raw = text.get(rope_key) if rope_key else {}
    if not isinstance(rope_raw, dict):
        raise text.fail(rope_key, "must be an object")
    rope = _Fields(rope_raw, text.path, f"{text.where(rope_key)}." if rope_key else "")
    rope_type = rope_raw.get("rope_type", rope_raw.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise UnsupportedModelError(f"{text.path}: rope type {rope_type!r} is not supported (expected 'mrope')")
    section = rope.get("mrope_section", [16, 24, 24])  # transformers' default when absent
    if (
        not isinstance(section, list)
        or len(section) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in section)
    ):
        raise rope.fail("mrope_section", f"must be three positive integers, found {section!r}")
    if 2 * sum(section) != head_dim:
        raise rope.fail("mrope_section", f"{section} must sum to head_dim / 2 = {head_dim // 2} (head_dim {head_dim})")
    theta = rope.float("rope_theta", text.get("rope_theta", 1_000_000.0))

    tie = bool(top.get("tie_word_embeddings", False) or text.get("tie_word_embeddings", False))
    return TextConfig(
        vocab_size=text.int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=text.int("intermediate_size"),
        num_hidden_layers=text.int("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=text.float("rms_norm_eps", 1e-5),
        rope_theta=theta,
        mrope_section=tuple(section),
        max_position_embeddings=text.int("max_position_embeddings", 32768),
        tie_word_embeddings=tie,
        hidden_act=text.act("hidden_act"),
    )


def _parse_vision(vision: _Fields) -> VisionConfig:
    depth = vision.int("depth")
    hidden = vision.int("hidden_size")
    heads = vision.int("num_heads")
    if hidden % heads:
        raise vision.fail("num_heads", f"({heads}) must divide hidden_size ({hidden})")
    if (hidden // heads) % 4:
        raise vision.fail("num_heads", f"gives head_dim {hidden // heads}; the 2-D rotary needs a multiple of 4")
    patch = vision.int("patch_size", 14)
    merge = vision.int("spatial_merge_size", 2)
    window = vision.int("window_size")
    if window // (patch * merge) < 1:
        raise vision.fail("window_size", f"({window}) must be >= patch_size * spatial_merge_size ({patch * merge})")
    fullatt = vision.get("fullatt_block_indexes")
    if (
        not isinstance(fullatt, list)
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth for i in fullatt)
        or len(set(fullatt)) != len(fullatt)
    ):
        raise vision.fail("fullatt_block_indexes", f"must be distinct block indexes in [0, {depth}), found {fullatt!r}")
    rope = vision.get("rope_parameters", {})
    theta = _Fields(rope, vision.path, "vision_config.rope_parameters.").float("rope_theta", 10000.0)
    in_chans = vision.int("in_chans", vision.get("in_channels", 3))
    return VisionConfig(
        depth=depth,
        hidden_size=hidden,
        intermediate_size=vision.int("intermediate_size"),
        num_heads=heads,
        in_chans=in_chans,
        patch_size=patch,
        spatial_merge_size=merge,
        temporal_patch_size=vision.int("temporal_patch_size", 2),
        window_size=window,
        fullatt_block_indexes=tuple(fullatt),
        out_hidden_size=vision.int("out_hidden_size"),
        hidden_act=vision.act("hidden_act"),
        rope_theta=theta,
    )
