"""Usability samples as the arrays the screening model trains on (synthetic, or a user's RF1M-like directory)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from c4u_engine.data.usability import UsabilitySample, sample
from c4u_engine.errors import InvalidInputError
from c4u_engine.screening.classes import CLASSES
from c4u_engine.data.usability_dataset import UsabilityRecord
from c4u_engine.screening.preprocess import generated_planes, product_planes, text_ids


def _empty(n: int) -> dict[str, np.ndarray]:
    from c4u_engine.screening.preprocess import SIDE, TEXT_LEN

    return {"generated": np.zeros((n, 4, SIDE, SIDE), np.uint8), "product": np.zeros((n, 4, SIDE, SIDE), np.uint8),
            "text": np.zeros((n, TEXT_LEN), np.int64), "label": np.zeros(n, np.int64),
            "difficulty": np.zeros(n, np.float32)}


def synthetic_arrays(seed: int, n: int, start: int = 0, log=sys.stderr, *,
                     draw: Callable[[int, int], UsabilitySample] = sample) -> dict[str, np.ndarray]:
    """Samples start..start+n-1 drawn with `seed` by `draw` (default: the usability generator's renders;
    data.creative_usability.creative_sample: the judge's creatives), preprocessed; a progress line every 2,000."""
    out, t0 = _empty(n), time.perf_counter()
    defects = []
    for j in range(n):
        s = draw(seed, start + j)
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


def union_arrays(seed: int, n_renders: int, n_creatives: int, log=sys.stderr) -> dict[str, np.ndarray]:
    """Both generators' samples drawn with `seed`: n_renders of the usability generator's renders, then
    n_creatives of the judge's creatives with the usability classes applied (data.creative_usability)."""
    from c4u_engine.data.creative_usability import creative_sample

    parts = [synthetic_arrays(seed, n_renders, log=log), synthetic_arrays(seed, n_creatives, log=log,
                                                                          draw=creative_sample)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["source"] = np.array(["renders"] * n_renders + ["creatives"] * n_creatives)
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


class FreshBatches:
    """Training batches of never-seen samples, drawn as training goes (the generators are cheap: ~300-400 samples/s
    on one core, against ~170/s for a training step of the screening model): batch `step` holds the renders
    step * r .. step * r + r - 1 and the judge's creatives step * c .. step * c + c - 1 of `seed` (r + c = batch,
    r = round(batch * renders_share)), so no sample repeats, and a resumed run draws what the uninterrupted one
    would have."""

    def __init__(self, seed: int, renders_share: float = 0.6) -> None:
        if not 0.0 <= renders_share <= 1.0:
            raise InvalidInputError(f"FreshBatches: renders_share must be in [0, 1], got {renders_share}")
        self.seed, self.renders_share = seed, renders_share

    def batch(self, step: int, batch: int) -> dict[str, np.ndarray]:
        from c4u_engine.data.creative_usability import creative_sample

        r = round(batch * self.renders_share)
        c = batch - r
        parts = [synthetic_arrays(self.seed, r, start=step * r, log=None),
                 synthetic_arrays(self.seed, c, start=step * c, log=None, draw=creative_sample)]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out["source"] = np.array(["renders"] * r + ["creatives"] * c)
        return out
