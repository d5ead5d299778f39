"""What export writes into an engine directory's manifest.json: the I/O contract read off the graphs, the TensorRT
optimization profiles (export/profiles.py's schema) and the digests.

The schema is documented, and read back on the runtime side, in c4u_engine/runners/engine_dir.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from c4u_engine.errors import InvalidInputError
from c4u_engine.models.config import ModelConfig
from c4u_engine.ops.preprocess_params import PreprocessParams
from c4u_engine.runners.engine_dir import FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE, TensorSpec

from export.profiles import ShapeProfile, ShapeRange, profiles_to_json

# ONNX element types -> the manifest's dtype names (engine_dir.ORT_DTYPES uses the same names).
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64",
               onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
               onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8"}


@dataclass(frozen=True)
class ProfileLimits:
    """Shape ranges the TensorRT profiles cover. None: derived from the config / preprocessor config.

    max_context: past + new tokens (default: min(max_position_embeddings, 8192)); max_prefill_tokens: new tokens
    per prefill call; max_vision_images: images per vision call at the preprocessor's largest size.
    """

    max_prefill_batch: int = 16
    max_decode_batch: int = 64
    max_prefill_tokens: int = 2048
    max_context: int | None = None
    max_vision_images: int = 2

    def __post_init__(self) -> None:
        for name in ("max_prefill_batch", "max_decode_batch", "max_prefill_tokens", "max_vision_images"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"ProfileLimits.{name} must be a positive int, got {value!r}")
        if self.max_context is not None and (not isinstance(self.max_context, int) or self.max_context < 2):
            raise InvalidInputError(f"ProfileLimits.max_context must be an int >= 2, got {self.max_context!r}")


def tensor_specs(values: Any) -> list[TensorSpec]:
    """TensorSpecs of ONNX ValueInfos (graph inputs or outputs): dtype names and dims (int or symbol)."""
    specs = []
    for vi in values:
        tensor = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        specs.append(TensorSpec(vi.name, ONNX_DTYPES.get(tensor.elem_type, f"onnx:{tensor.elem_type}"), tuple(dims)))
    return specs


def _rng(lo: list[int], opt: list[int], hi: list[int]) -> ShapeRange:
    return ShapeRange(tuple(lo), tuple(opt), tuple(hi))


def decoder_profiles(config: ModelConfig, limits: ProfileLimits) -> list[ShapeProfile]:
    """"prefill" (many new tokens after 0..context past slots) and "decode" (one new token per row)."""
    text = config.text
    context = limits.max_context or min(text.max_position_embeddings, 8192)
    seq = min(limits.max_prefill_tokens, context)
    kv, h, d = text.num_key_value_heads, text.hidden_size, text.head_dim

    def profile(name: str, batch: tuple[int, int, int], new: tuple[int, int, int],
                past: tuple[int, int, int]) -> ShapeProfile:
        total = tuple(n + p for n, p in zip(new, past))
        shapes = {
            "inputs_embeds": _rng([batch[0], new[0], h], [batch[1], new[1], h], [batch[2], new[2], h]),
            "position_ids": _rng([3, batch[0], new[0]], [3, batch[1], new[1]], [3, batch[2], new[2]]),
            "attention_mask": _rng([batch[0], total[0]], [batch[1], total[1]], [batch[2], min(total[2], context)]),
            "logits_index": _rng([batch[0], 1], [batch[1], 1], [batch[2], new[2]]),
        }
        cache = _rng([batch[0], kv, past[0], d], [batch[1], kv, past[1], d], [batch[2], kv, past[2], d])
        # the frozen segment: empty where a runner passes the whole cache as past (TensorRT), up to the context
        frozen = _rng([batch[0], kv, 0, d], [batch[1], kv, 0, d], [batch[2], kv, past[2], d])
        for i in range(text.num_hidden_layers):
            shapes[f"past_key_{i}"] = shapes[f"past_value_{i}"] = cache
            shapes[f"frozen_key_{i}"] = shapes[f"frozen_value_{i}"] = frozen
        return ShapeProfile(name, shapes)

    pb = limits.max_prefill_batch
    db = limits.max_decode_batch
    return [
        profile("prefill", (1, min(4, pb), pb), (1, min(512, seq), seq), (0, min(512, context - seq), context - 1)),
        profile("decode", (1, min(8, db), db), (1, 1, 1), (1, min(1024, context - 1), context - 1)),
    ]


def vision_profiles(config: ModelConfig, preprocess: PreprocessParams, limits: ProfileLimits) -> list[ShapeProfile]:
    """One "images" profile: from one merge unit up to max_vision_images images at the preprocessor's largest
    size (attention scores are quadratic in the patches of a call: runners split larger batches of images)."""
    vision = config.vision
    unit = vision.merge_unit
    per_image = max(unit, preprocess.max_pixels // (vision.patch_size ** 2) // unit * unit)
    lo, opt, hi = unit, min(per_image, 2048), per_image * limits.max_vision_images  # opt: a typical creative

    def rows(width: int | None, divide: int = 1) -> ShapeRange:
        tail = [] if width is None else [width]
        return _rng([lo // divide, *tail], [opt // divide, *tail], [hi // divide, *tail])

    return [ShapeProfile("images", {
        "pixel_patches": rows(vision.patch_dim), "cos": rows(vision.head_dim), "sin": rows(vision.head_dim),
        "window_index": rows(None, unit), "reverse_index": rows(None, unit),
        "full_segments": rows(None), "window_segments": rows(None),
    })]


def build_manifest(
    *,
    config: ModelConfig,
    dtype: str,
    opset: int,
    source_dir: Path,
    source_fingerprint: str,
    graphs: dict[str, dict[str, Any]],
    embeddings: dict[str, Any],
    files: list[str],
    profiles: dict[str, list[ShapeProfile]],
    exporter_version: str,
    tool_versions: dict[str, str],
    batch_invariant: bool = False,
) -> dict[str, Any]:
    """The manifest.json object (schema: c4u_engine/runners/engine_dir.py)."""
    text = config.text
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "exporter": {"name": "export.onnx_export", "version": exporter_version, **tool_versions},
        "model_type": config.model_type,
        "dtype": dtype,
        "opset": opset,
        "source": {"path": str(source_dir), "fingerprint": source_fingerprint},
        "model": {"num_layers": text.num_hidden_layers, "num_kv_heads": text.num_key_value_heads,
                  "head_dim": text.head_dim, "hidden_size": text.hidden_size, "vocab_size": text.vocab_size,
                  "image_token_id": config.image_token_id, "spatial_merge_size": config.vision.spatial_merge_size,
                  "patch_dim": config.vision.patch_dim, "tie_word_embeddings": text.tie_word_embeddings},
        "graphs": graphs,
        "embeddings": embeddings,
        "files": files,
        "profiles": profiles_to_json(profiles),
        "batch_invariant": batch_invariant,  # attention's row sums in float64 (export/attention.py)
        "tensorrt_plugins": [],
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json atomically (written last: an interrupted export leaves no manifest behind)."""
    path = out_dir / MANIFEST_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
