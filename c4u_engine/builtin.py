"""The built-in model: a small Creative4U-style judge trained by the project (c4u_engine/train), shipped in the
package in Hugging Face layout (with its exported ONNX graphs under onnx/ when present). See its MODEL_CARD.md."""

from __future__ import annotations

import os
from pathlib import Path

from c4u_engine.errors import ModelFormatError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_model"
# Quantized engines shipped beside the fp32 one (onnx/), for Engine(builtin_model_dir(), precision="int8"): per-row
# int8 with SmoothQuant (export/quantize.py). Not the default: int8 did not meet the bars for a default on every
# checkpoint tried (the same winner on ~40M random checkpoints; batched vs alone within 1e-5: per-row int8 moves
# P(A) by up to 2e-3 where fp32 moves it by 7e-7; BENCHMARKS.md, "Precision on any checkpoint").
SHIPPED_QUANTIZED = ("int8",)


def builtin_model_dir() -> Path:
    """Directory of the shipped model; a clear error when this installation lacks it."""
    if not (BUILTIN_DIR / "config.json").is_file():
        raise ModelFormatError(
            f"the built-in model is missing from this installation ({BUILTIN_DIR}); pass a checkpoint to "
            f"c4u_engine.Engine(model_dir) or train one with `python -m c4u_engine.train all OUT`"
        )
    return BUILTIN_DIR


def user_engine_dir(precision: str) -> Path:
    """Where `c4u export builtin --precision P` writes by default: $C4U_CACHE_DIR, else $XDG_CACHE_HOME/c4u_engine,
    else ~/.cache/c4u_engine; one folder per precision (builtin-int8, builtin-int4, ...), a model directory that
    `--model` takes."""
    root = os.environ.get("C4U_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "c4u_engine")
    return Path(root) / f"builtin-{precision}"
