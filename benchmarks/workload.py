"""The selection benchmark's workload: a ~40M-parameter Qwen2.5-VL checkpoint with random weights and 224x224
creatives, built locally (nothing downloaded). Shared by bench_select.py and test_bench_select.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # the tiny-checkpoint factory lives there

from tiny_checkpoint import make_test_image, make_tiny_checkpoint  # noqa: E402

# ~40M parameters: vision ~14M, language ~25M (+ small embeddings)
VISION = dict(depth=8, hidden_size=384, num_heads=6, intermediate_size=1024, window_size=112,
              fullatt_block_indexes=[3, 7])
TEXT = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=8,
            intermediate_size=1536,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]})
# ~150M parameters: the same vision tower, language 12 x 1024 (for lane / thread defaults at a third size)
TEXT_150M = dict(hidden_size=1024, num_attention_heads=16, num_key_value_heads=4, num_hidden_layers=12,
                 intermediate_size=2816,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]})
IMAGE_SIDE = 224
PROFILE = {"title": "Waterproof trail running shoes", "queries": ["running shoes sale", "waterproof sneakers"]}


def _checkpoint(path: Path, text: dict) -> Path:
    if not (path / "config.json").is_file():
        make_tiny_checkpoint(path, seed=0, vision=VISION, text=text, min_pixels=56 * 56,
                             max_pixels=IMAGE_SIDE * IMAGE_SIDE)
    return path


def checkpoint(root: str | Path) -> Path:
    return _checkpoint(Path(root) / "c4u-bench-40m", TEXT)


def checkpoint_150m(root: str | Path) -> Path:
    return _checkpoint(Path(root) / "c4u-bench-150m", TEXT_150M)


def exported(name: str, root: str | Path) -> Path:
    """The checkpoint `name` (builtin | 40m | 150m) with its fp32 ONNX engine in <ckpt>/onnx, built on first use."""
    if name == "builtin":
        from c4u_engine.builtin import builtin_model_dir

        return Path(builtin_model_dir())
    if name not in ("40m", "150m"):
        raise SystemExit(f"unknown model {name!r}: builtin, 40m or 150m")
    ckpt = (checkpoint if name == "40m" else checkpoint_150m)(root)
    if not (ckpt / "onnx" / "manifest.json").is_file():
        from export.onnx_export import export_engine

        export_engine(ckpt, log=lambda message: None)
    return ckpt


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    return [make_test_image(IMAGE_SIDE, IMAGE_SIDE, seed=seed * 1000 + i) for i in range(n)]


def parameter_count(model_dir: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts = {"vision": 0, "language": 0}
    with safe_open(str(model_dir / "model.safetensors"), "np") as f:
        for name in f.keys():
            n = int(np.prod(f.get_slice(name).get_shape()))
            counts["vision" if "visual" in name else "language"] += n
    return counts
