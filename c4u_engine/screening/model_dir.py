"""A screening model directory: its file names and the check of screen_config.json against this runtime.

    screen_config.json   {"format": "c4u-screen-1", "classes": [...], "side", "text_len", "text_vocab",
                          "threshold", "reject_below"?, "model": {...}, "measured": {...}?}
                         (P(available) >= threshold: usable; < reject_below: screened out; between: kept, flagged)
    rfnet.onnx           probabilities [B, classes] from (generated, product, text, has_product)
    rfnet.safetensors    the torch weights (the RFFT reward loads them)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from c4u_engine.screening.classes import CLASSES
from c4u_engine.errors import ScreeningModelError
from c4u_engine.screening.preprocess import SIDE, TEXT_LEN, TEXT_VOCAB

FORMAT = "c4u-screen-1"
CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE = "screen_config.json", "rfnet.onnx", "rfnet.safetensors"
BUILTIN_SCREEN_DIR = Path(__file__).resolve().parent.parent / "screening_model"


def read_screen_config(model_dir: str | Path, need: str = ONNX_FILE) -> dict[str, Any]:
    """The directory's config, checked: the format, the classes and the input sizes this code preprocesses for."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ScreeningModelError(f"screening model directory {d} does not exist")
    path = d / CONFIG_FILE
    if not path.is_file():
        raise ScreeningModelError(f"{d} is not a screening model directory: no {CONFIG_FILE} (a judge checkpoint? "
                                  f"pass it as Engine(model_dir), and a screening model as screen_model=)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScreeningModelError(f"{path}: unreadable ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ScreeningModelError(f"{path}: format {config.get('format') if isinstance(config, dict) else None!r}; "
                                  f"this version reads {FORMAT!r}")
    if tuple(config.get("classes", ())) != CLASSES:
        raise ScreeningModelError(f"{path}: classes {config.get('classes')}; this version expects {list(CLASSES)}")
    for key, want in (("side", SIDE), ("text_len", TEXT_LEN), ("text_vocab", TEXT_VOCAB)):
        if config.get(key) != want:
            raise ScreeningModelError(f"{path}: {key}={config.get(key)!r} but this version preprocesses for "
                                      f"{key}={want}: the model was made for another input size")
    t = config.get("threshold")
    if not isinstance(t, (int, float)) or not 0.0 < t < 1.0:
        raise ScreeningModelError(f"{path}: threshold={t!r}; expected a number in (0, 1)")
    r = config.get("reject_below", t)
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r <= t:
        raise ScreeningModelError(f"{path}: reject_below={r!r}; expected a number in (0, threshold={t}]")
    if not (d / need).is_file():
        raise ScreeningModelError(f"screening model directory {d} lacks {need}")
    return config
