"""Usability samples as the arrays the screening model trains on (synthetic, or a user's RF1M-like directory)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from c4u_engine.data.usability import CLASSES, sample
from c4u_engine.data.usability_dataset import UsabilityRecord
from c4u_engine.screening.preprocess import generated_planes, product_planes, text_ids


def _empty(n: int) -> dict[str, np.ndarray]:
    from c4u_engine.screening.preprocess import SIDE, TEXT_LEN

    return {"generated": np.zeros((n, 4, SIDE, SIDE), np.uint8), "product": np.zeros((n, 4, SIDE, SIDE), np.uint8),
            "text": np.zeros((n, TEXT_LEN), np.int64), "label": np.zeros(n, np.int64),
            "difficulty": np.zeros(n, np.float32)}


def synthetic_arrays(seed: int, n: int, start: int = 0, log=sys.stderr) -> dict[str, np.ndarray]:
    """Samples start..start+n-1 drawn with `seed`, preprocessed; a progress line every 2,000."""
    out, t0 = _empty(n), time.perf_counter()
    defects = []
    for j in range(n):
        s = sample(seed, start + j)
        out["generated"][j] = generated_planes(s.generated)
        out["product"][j] = product_planes(s.product)
        out["text"][j] = text_ids(s.text)
        out["label"][j] = CLASSES.index(s.label)
        out["difficulty"][j] = s.difficulty
        defects.append(s.meta["defect"])
        if log and (j + 1) % 2000 == 0:
            print(f"data seed={seed}: {j + 1}/{n} samples ({time.perf_counter() - t0:.0f} s)", file=log, flush=True)
    out["defect"] = np.array(defects)
    return out


def record_arrays(records: Sequence[UsabilityRecord]) -> dict[str, np.ndarray]:
    """A user's records (data.usability_dataset.load_usability), preprocessed."""
    out = _empty(len(records))
    for j, r in enumerate(records):
        with Image.open(r.generated) as g:
            out["generated"][j] = generated_planes(g)
        with Image.open(r.product) as p:
            out["product"][j] = product_planes(p)
        out["text"][j] = text_ids(r.text)
        out["label"][j] = CLASSES.index(r.label)
        out["difficulty"][j] = r.difficulty or 0.0
    out["defect"] = np.array([(r.meta or {}).get("defect", "") for r in records])
    return out
