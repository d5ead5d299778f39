"""The screening runtime: the RFNet-style usability model on onnxruntime (numpy + Pillow, no torch).

`Screener.screen(images, text, product)` judges every candidate in one batched call (chunks of `batch`) and returns
one Verdict each. With a product cut-out it runs the full model (ad + cut-out + text); without one, its image+text
mode (learned "missing" tokens stand in for the cut-out): weaker, see the model card for both modes' measured AP.

Two bounds on P(available): at or above `threshold` a candidate is usable; below `reject_below` it is unusable and
screened out; in between the screener is not sure: the candidate is kept for selection and flagged (a screen that
drops what it is unsure of is one a user turns off). `screen_candidates` applies this to a request's candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from c4u_engine.screening.classes import CLASSES
from c4u_engine.engine.lru import ByteLRU
from c4u_engine.errors import AllScreenedOutError, InvalidInputError, ProductImageError, ScreeningModelError
from c4u_engine.screening.model_dir import BUILTIN_SCREEN_DIR, ONNX_FILE, read_screen_config
from c4u_engine.screening.preprocess import generated_planes, product_planes, text_ids

MODES = ("auto", "full", "text")  # auto: full when a product image is given, else image+text


@dataclass(frozen=True)
class Verdict:
    """One candidate's screening: usable or not, the most likely defect and the probabilities of all classes."""

    usable: bool  # P(available) >= threshold
    p_available: float
    label: str  # "available", or the most likely defect when not usable
    probability: float  # of `label`
    probs: dict[str, float]
    certain: bool = True  # usable, or P(available) < reject_below: unusable for sure

    @property
    def rejected(self) -> bool:
        """Screened out of a selection: unusable, and the screener is sure of it."""
        return not self.usable and self.certain

    @property
    def flagged(self) -> bool:
        """Kept for selection, but the screener leans to unusable without being sure."""
        return not self.usable and not self.certain

    @property
    def status(self) -> str:
        """"usable", "uncertain" (kept, flagged) or "unusable" (screened out)."""
        return "usable" if self.usable else ("unusable" if self.certain else "uncertain")

    @property
    def reason(self) -> str:
        defect = self.label.replace("_", " ")
        if self.flagged:
            return f"uncertain: maybe {defect} (p={self.probability:.2f}, P(available)={self.p_available:.2f}); kept"
        return f"unusable: {defect} (p={self.probability:.2f})"


class Screener:
    """A loaded screening model. threshold: a candidate is usable when P(available) >= threshold; reject_below: it
    is screened out when P(available) < reject_below, and kept but flagged in between (defaults: the model's own,
    from screen_config.json; reject_below is at most threshold). threads: onnxruntime's intra-op threads (0: its
    choice, one per physical core, as the judge's runner; 1 was faster on a 2-core machine busy with other jobs, 2
    once it calmed down: BENCHMARKS.md). Safe to call from many threads (onnxruntime sessions are)."""

    def __init__(self, model_dir: str | Path | None = None, threshold: float | None = None, *, batch: int = 64,
                 threads: int = 0, cache_bytes: int = 4 << 20, reject_below: float | None = None) -> None:
        import onnxruntime as ort

        self.model_dir = Path(model_dir) if model_dir is not None else BUILTIN_SCREEN_DIR
        self.config = read_screen_config(self.model_dir)
        self.threshold = check_threshold(self.config["threshold"] if threshold is None else threshold)
        if reject_below is None:
            reject_below = min(self.config.get("reject_below", self.threshold), self.threshold)
        self.reject_below = check_threshold(reject_below, "reject_below")
        if self.reject_below > self.threshold:
            raise InvalidInputError(f"screening reject_below={self.reject_below} is above threshold="
                                    f"{self.threshold}: a candidate cannot be screened out and usable at once")
        self.batch = batch
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidInputError(f"screening cache_bytes must be an int >= 0, got {cache_bytes!r}")
        # A verdict depends on the ad, the cut-out and the text, not on the user: a product's creatives screened
        # for one user's request are not screened again for the next (cache_bytes=0: always recompute).
        self._verdicts = ByteLRU(cache_bytes, lambda probs: probs.nbytes + 200)
        self._products = ByteLRU(cache_bytes, lambda planes: planes.nbytes)  # cut-out planes by content
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # No spin-waiting after a call: the judge's own onnxruntime session runs right after on the same cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_dir / ONNX_FILE), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a broken graph
            raise ScreeningModelError(f"{self.model_dir / ONNX_FILE}: onnxruntime cannot load it ({exc})") from None
        names = [i.name for i in self.session.get_inputs()]
        if names != ["generated", "product", "text", "has_product"]:
            raise ScreeningModelError(f"{self.model_dir / ONNX_FILE}: inputs {names}; expected generated, product, "
                                      "text, has_product")
        shape = self.session.get_inputs()[0].shape
        if list(shape[1:]) != [4, self.config["side"], self.config["side"]]:
            raise ScreeningModelError(f"{self.model_dir / ONNX_FILE}: generated input {shape} does not match "
                                      f"side={self.config['side']} in its config")

    @property
    def measured(self) -> dict[str, Any]:
        return dict(self.config.get("measured", {}))

    def probabilities(self, images: Sequence[Any], text: str, product: Any = None, mode: str = "auto", *,
                      use_cache: bool = True) -> np.ndarray:
        """float32 [N, classes]. images: LoadedImage, PIL images or uint8 [H, W, 3] arrays; product: a cut-out
        (anything screening.product_image.load_product_image reads) or None; mode as MODES. use_cache: reuse (and
        keep) the verdicts of images already screened with the same cut-out and text."""
        return self.probabilities_and_hits(images, text, product, mode, use_cache=use_cache)[0]

    def probabilities_and_hits(self, images: Sequence[Any], text: str, product: Any = None, mode: str = "auto", *,
                               use_cache: bool = True) -> tuple[np.ndarray, int]:
        """`probabilities`, and how many of them came from the cache."""
        from c4u_engine.screening.product_image import load_product_image

        if mode not in MODES:
            raise InvalidInputError(f"screening mode {mode!r}; valid modes: {MODES}")
        if not isinstance(text, str):
            raise InvalidInputError(f"screening text must be the product description (str), got {type(text).__name__}")
        if mode == "full" and product is None:
            raise ProductImageError("screening mode 'full' needs the product image (the cut-out): pass product_image=,"
                                    " or use mode 'text' (image+text, weaker)")
        use_product = product is not None and mode != "text"
        side = self.config["side"]
        prod, product_key = np.zeros((4, side, side), np.uint8), None
        if use_product:
            prod, product_key = self._product_planes(load_product_image(product), use_cache)
        ids = text_ids(text)
        out = np.empty((len(images), len(CLASSES)), np.float32)
        keys = [(_image_key(im), product_key, ids.tobytes()) for im in images] if use_cache else []
        todo = []
        for k in range(len(images)):
            hit = self._verdicts.get(keys[k]) if use_cache else None
            if hit is None:
                todo.append(k)
            else:
                out[k] = hit
        for i in range(0, len(todo), self.batch):
            chunk = todo[i: i + self.batch]
            gen = np.stack([generated_planes(getattr(images[k], "pixels", images[k])) for k in chunk])
            # One product row for all ads: the graph encodes the cut-out and the text once and broadcasts them.
            feeds = {"generated": gen, "product": prod[None], "text": ids[None],
                     "has_product": np.full(1, 1.0 if use_product else 0.0, np.float32)}
            probs = self.session.run(["probs"], feeds)[0]
            out[chunk] = probs
            if use_cache:
                for k, row in zip(chunk, probs):
                    self._verdicts.put(keys[k], row.copy())
        return out, len(images) - len(todo)

    def _product_planes(self, cutout, use_cache: bool) -> tuple[np.ndarray, str]:
        """The cut-out's planes and its content key (cached by content: one product, many requests)."""
        from c4u_engine.imaging import content_hash

        key = content_hash(np.asarray(cutout))
        planes = self._products.get(key) if use_cache else None
        if planes is None:
            planes = product_planes(cutout)
            if use_cache:
                self._products.put(key, planes)
        return planes, key

    def clear_cache(self) -> None:
        self._verdicts.clear()
        self._products.clear()

    def screen(self, images: Sequence[Any], text: str, product: Any = None, mode: str = "auto", *,
               use_cache: bool = True) -> list[Verdict]:
        """One Verdict per image (see `probabilities` for the arguments)."""
        return [self.verdict(p) for p in self.probabilities(images, text, product, mode, use_cache=use_cache)]

    def verdict(self, probs: np.ndarray) -> Verdict:
        p_avail = float(probs[0])
        usable = p_avail >= self.threshold
        k = 0 if usable else 1 + int(np.argmax(probs[1:]))
        return Verdict(usable, p_avail, CLASSES[k], float(probs[k]), {c: float(v) for c, v in zip(CLASSES, probs)},
                       certain=usable or p_avail < self.reject_below)


def check_threshold(value: Any, name: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InvalidInputError(f"screening {name} must be a number in (0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ScreeningResult:
    """What screening did to a request's candidates (input indices): `kept` are the unique candidates that go on to
    selection (flagged ones among them), `duplicates` the duplicates of kept ones; `rejected` and `flagged` map an
    input (duplicates included) to its reason; `stats` goes to Selection.stats["screening"]."""

    kept: list[int]
    duplicates: dict[int, int]
    rejected: dict[int, str]
    flagged: dict[int, str]
    stats: dict[str, Any]


def screen_candidates(screener: Screener, loaded: dict, unique: list[int], duplicates: dict[int, int], text: str,
                      product: Any, mode: str = "auto", use_cache: bool = True) -> ScreeningResult:
    """Screen the unique candidates (input index -> LoadedImage) in one batch. A candidate the screener is sure is
    unusable is rejected, one it is unsure of is kept and flagged; AllScreenedOutError when none is kept."""
    t0 = time.perf_counter()
    probs, hits = screener.probabilities_and_hits([loaded[i] for i in unique], text, product, mode,
                                                  use_cache=use_cache)
    verdicts = dict(zip(unique, (screener.verdict(p) for p in probs)))
    rejected = {i: v.reason for i, v in verdicts.items() if v.rejected}
    flagged = {i: v.reason for i, v in verdicts.items() if v.flagged}
    for d, o in duplicates.items():  # a duplicate shares its original's verdict
        for marks in (rejected, flagged):
            if o in marks:
                marks[d] = marks[o]
    kept = [i for i in unique if i not in rejected]
    if unique and not kept:
        raise AllScreenedOutError(
            f"screening rejected every candidate ({'; '.join(f'#{i}: {r}' for i, r in sorted(rejected.items()))}): "
            "nothing is left to select from. To rank them anyway, turn screening off (select(..., screen=False); "
            "c4u select without --screen and --product; over HTTP, no \"screen\" and no \"product_image\"), or pass "
            f"a lower reject_below (Screener(..., reject_below=...); now {screener.reject_below})")
    # Who was screened out or flagged, and why, as data (the reasons above are the same in words): a duplicate has
    # its original's verdict.
    marked = {i: verdicts[duplicates.get(i, i)] for i in sorted(rejected.keys() | flagged.keys())}
    stats = {"mode": "image+product+text" if product is not None and mode != "text" else "image+text",
             "screened": len(unique), "screened_out": sorted(rejected), "flagged": sorted(flagged),
             "verdicts": {i: {"status": v.status, "label": v.label, "probability": round(v.probability, 4),
                              "p_available": round(v.p_available, 4)} for i, v in marked.items()},
             "threshold": screener.threshold, "reject_below": screener.reject_below,
             "batches": -(-(len(unique) - hits) // screener.batch), "cached": hits,
             "seconds": round(time.perf_counter() - t0, 6),
             "p_available": {i: round(v.p_available, 4) for i, v in verdicts.items()}}
    return ScreeningResult(kept, {d: o for d, o in duplicates.items() if o not in rejected}, rejected, flagged, stats)


def _image_key(image: Any) -> str:
    """The content hash of an ad: a LoadedImage carries it; a PIL image or an array is hashed here."""
    from c4u_engine.imaging import content_hash

    known = getattr(image, "content_hash", None)
    if known is not None:
        return known
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    return content_hash(np.ascontiguousarray(np.asarray(image, np.uint8)))
