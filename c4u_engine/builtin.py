"""The built-in model: a small Creative4U-style judge trained by the project (c4u_engine/train), shipped in the
package in Hugging Face layout (with its exported ONNX graphs under onnx/ when present). See its MODEL_CARD.md."""

from __future__ import annotations

from pathlib import Path

from c4u_engine.errors import ModelFormatError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_model"
# The built-in model's CPU runtime when no precision is asked for: int8 kept its held-out accuracy and pick agreement
# within the bounds of the precision issue while running selections faster (BENCHMARKS.md, "Precision").
DEFAULT_CPU_PRECISION = "int8"


def builtin_model_dir() -> Path:
    """Directory of the shipped model; a clear error when this installation lacks it."""
    if not (BUILTIN_DIR / "config.json").is_file():
        raise ModelFormatError(
            f"the built-in model is missing from this installation ({BUILTIN_DIR}); pass a checkpoint to "
            f"c4u_engine.Engine(model_dir) or train one with `python -m c4u_engine.train all OUT`"
        )
    return BUILTIN_DIR


def default_cpu_precision(model_dir: Path) -> str | None:
    """The precision to run `model_dir` in on CPU when none is asked for: the built-in model's default when
    model_dir is the built-in model and this installation has that engine, else None (the runner's default)."""
    from c4u_engine.runners.engine_dir import MANIFEST_FILE, engine_subdir

    try:
        builtin = Path(model_dir).resolve() == BUILTIN_DIR
    except OSError:
        return None
    if builtin and (BUILTIN_DIR / engine_subdir(DEFAULT_CPU_PRECISION) / MANIFEST_FILE).is_file():
        return DEFAULT_CPU_PRECISION
    return None
