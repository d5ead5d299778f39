"""The PyTorch reference Qwen2.5-VL and its checkpoint loading.

Config, checkpoint files, M-RoPE position ids and the vision tower's grid-derived inputs are torch-free and
import eagerly (the onnxruntime path uses them without torch); the torch modules load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from c4u_engine.models.checkpoint_files import checkpoint_fingerprint, internal_name, tensor_files
from c4u_engine.models.config import ModelConfig, TextConfig, VisionConfig
from c4u_engine.models.rope import image_token_count, mrope_position_ids, next_positions, text_position_ids
from c4u_engine.models.vision_aux import VisionAuxArrays, vision_aux_arrays

_TORCH_EXPORTS = {
    "Qwen25VL": "c4u_engine.models.qwen2_5_vl",
    "LanguageModel": "c4u_engine.models.language",
    "VisionTower": "c4u_engine.models.vision",
    "VisionAux": "c4u_engine.models.vision",
    "vision_aux_inputs": "c4u_engine.models.vision",
    "load_model": "c4u_engine.models.checkpoint",
    "load_state_dict": "c4u_engine.models.checkpoint",
}

__all__ = [
    "checkpoint_fingerprint",
    "internal_name",
    "tensor_files",
    "ModelConfig",
    "TextConfig",
    "VisionConfig",
    "VisionAuxArrays",
    "image_token_count",
    "mrope_position_ids",
    "next_positions",
    "text_position_ids",
    "vision_aux_arrays",
    *_TORCH_EXPORTS,
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_EXPORTS:
        return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
