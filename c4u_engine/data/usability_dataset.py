"""The usability dataset layout (RF1M-like) on disk: JSONL records with the images beside them.

    DIR/train.jsonl, DIR/test.jsonl, ...   one split per file
    DIR/images/...                         generated ads (RGB PNG/JPEG) and product cut-outs (RGBA PNG)

Record: {"id": str, "generated": "images/0_gen.png", "product": "images/0_product.png", "text": str,
         "label": one of usability.CLASSES, "difficulty": float?, "meta": {...}?}

`load_usability` reads a user's own directory in this layout: each record is validated and a bad one raises
InvalidInputError naming file:line and the field; image paths must stay inside the directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c4u_engine.data.creative_pair import jsonl_objects
from c4u_engine.data.usability import sample
from c4u_engine.screening.classes import CLASSES
from c4u_engine.errors import InvalidInputError


@dataclass(frozen=True)
class UsabilityRecord:
    id: str
    generated: Path
    product: Path
    text: str
    label: str
    difficulty: float | None = None
    meta: dict[str, Any] | None = field(default=None, repr=False)


def write_usability(root: str | os.PathLike[str], split: str, seed: int, n: int, start: int = 0,
                    size: int = 128) -> Path:
    """Render samples start..start+n-1 of `seed` into root/images and root/{split}.jsonl; returns the JSONL path."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    path = root / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            s = sample(seed, i, size=size)
            rid = f"{split}_{seed}_{i}"
            gen, prod = f"images/{rid}_gen.png", f"images/{rid}_product.png"
            s.generated.save(root / gen)
            s.product.save(root / prod)
            f.write(json.dumps({"id": rid, "generated": gen, "product": prod, "text": s.text, "label": s.label,
                                "difficulty": s.difficulty, "meta": s.meta}) + "\n")
    return path


def _image_path(root: Path, value: Any, where: str, name: str, check_files: bool) -> Path:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{where}: field {name!r} must be a relative image path, got {value!r}")
    p = Path(value)
    if p.is_absolute() or ".." in p.parts:
        raise InvalidInputError(f"{where}: field {name!r}={value!r} must stay inside {root}")
    full = root / p
    if check_files and not full.is_file():
        raise InvalidInputError(f"{where}: field {name!r}: no such image {full}")
    return full


def load_usability(root: str | os.PathLike[str], split: str = "train", *,
                   check_files: bool = True) -> list[UsabilityRecord]:
    """The records of root/{split}.jsonl (image paths made absolute)."""
    root = Path(root)
    path = root / f"{split}.jsonl"
    if not path.is_file():
        have = sorted(p.stem for p in root.glob("*.jsonl")) if root.is_dir() else []
        raise InvalidInputError(f"no usability split {split!r} in {root} (no {path.name}; splits found: {have})")
    records = []
    for n, where, obj in jsonl_objects(path):
        label, text = obj.get("label"), obj.get("text")
        if label not in CLASSES:
            raise InvalidInputError(f"{where}: field 'label'={label!r}; valid labels: {CLASSES}")
        if not isinstance(text, str):
            raise InvalidInputError(f"{where}: field 'text' must be a string")
        difficulty = obj.get("difficulty")
        if difficulty is not None and not isinstance(difficulty, (int, float)):
            raise InvalidInputError(f"{where}: field 'difficulty' must be a number")
        records.append(UsabilityRecord(
            id=str(obj.get("id", f"{split}:{n}")),
            generated=_image_path(root, obj.get("generated"), where, "generated", check_files),
            product=_image_path(root, obj.get("product"), where, "product", check_files),
            text=text, label=label, difficulty=None if difficulty is None else float(difficulty),
            meta=obj.get("meta")))
    return records
