"""The screening runtime: the RFNet-style usability model on onnxruntime (numpy + Pillow, no torch).

`Screener.screen(images, text, product)` judges every candidate in one batched call (chunks of `batch`) and returns
one Verdict each. With a product cut-out it runs the full model (ad + cut-out + text); without one, its image+text
mode (learned "missing" tokens stand in for the cut-out): weaker, see the model card for both modes' measured AP.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from c4u_engine.data.usability import CLASSES
from c4u_engine.errors import InvalidInputError, ProductImageError, ScreeningModelError
from c4u_engine.screening.model_dir import BUILTIN_SCREEN_DIR, ONNX_FILE, read_screen_config
from c4u_engine.screening.preprocess import generated_planes, product_planes, text_ids

MODES = ("auto", "full", "text")  # auto: full when a product image is given, else image+text


@dataclass(frozen=True)
class Verdict:
    """One candidate's screening: usable or not, the most likely defect and the probabilities of all classes."""

    usable: bool
    p_available: float
    label: str  # "available", or the most likely defect when unusable
    probability: float  # of `label`
    probs: dict[str, float]

    @property
    def reason(self) -> str:
        return f"unusable: {self.label.replace('_', ' ')} (p={self.probability:.2f})"


class Screener:
    """A loaded screening model. threshold: a candidate is unusable when P(available) < threshold
    (default: the model's own, from screen_config.json). threads: onnxruntime's intra-op threads (0: its choice, one
    per physical core, as the judge's runner; 1 was faster on a 2-core machine busy with other jobs, 2 once it
    calmed down: BENCHMARKS.md). Safe to call from many threads (onnxruntime sessions are)."""

    def __init__(self, model_dir: str | Path | None = None, threshold: float | None = None, *, batch: int = 64,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        self.model_dir = Path(model_dir) if model_dir is not None else BUILTIN_SCREEN_DIR
        self.config = read_screen_config(self.model_dir)
        self.threshold = check_threshold(self.config["threshold"] if threshold is None else threshold)
        self.batch = batch
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

    def probabilities(self, images: Sequence[Any], text: str, product: Any = None, mode: str = "auto") -> np.ndarray:
        """float32 [N, classes]. images: LoadedImage, PIL images or uint8 [H, W, 3] arrays; product: a cut-out
        (anything screening.product_image.load_product_image reads) or None; mode as MODES."""
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
        prod = np.zeros((4, side, side), np.uint8)
        if use_product:
            prod = product_planes(load_product_image(product))
        ids = text_ids(text)
        out = []
        for i in range(0, len(images), self.batch):
            chunk = images[i: i + self.batch]
            gen = np.stack([generated_planes(getattr(im, "pixels", im)) for im in chunk])
            # One product row for all ads: the graph encodes the cut-out and the text once and broadcasts them.
            feeds = {"generated": gen, "product": prod[None], "text": ids[None],
                     "has_product": np.full(1, 1.0 if use_product else 0.0, np.float32)}
            out.append(self.session.run(["probs"], feeds)[0])
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)

    def screen(self, images: Sequence[Any], text: str, product: Any = None, mode: str = "auto") -> list[Verdict]:
        """One Verdict per image (see `probabilities` for the arguments)."""
        return [self.verdict(p) for p in self.probabilities(images, text, product, mode)]

    def verdict(self, probs: np.ndarray) -> Verdict:
        p_avail = float(probs[0])
        usable = p_avail >= self.threshold
        k = 0 if usable else 1 + int(np.argmax(probs[1:]))
        return Verdict(usable, p_avail, CLASSES[k], float(probs[k]), {c: float(v) for c, v in zip(CLASSES, probs)})


def check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InvalidInputError(f"screening threshold must be a number in (0, 1), got {value!r}")
    return float(value)


def screen_candidates(screener: Screener, loaded: dict, unique: list[int], duplicates: dict[int, int], text: str,
                      product: Any, mode: str = "auto") -> tuple[list[int], dict[int, int], dict[int, str], dict]:
    """Screen the unique candidates (input index -> LoadedImage) in one batch. Returns the unique ones kept, the
    duplicates of kept ones, the rejected (index -> reason; a duplicate shares its original's) and the stats."""
    t0 = time.perf_counter()
    verdicts = screener.screen([loaded[i] for i in unique], text, product, mode)
    rejected = {i: v.reason for i, v in zip(unique, verdicts) if not v.usable}
    for d, o in duplicates.items():
        if o in rejected:
            rejected[d] = rejected[o]
    kept = [i for i in unique if i not in rejected]
    stats = {"mode": "image+product+text" if product is not None and mode != "text" else "image+text",
             "screened": len(unique), "screened_out": sorted(rejected), "threshold": screener.threshold,
             "batches": -(-len(unique) // screener.batch), "seconds": round(time.perf_counter() - t0, 6),
             "p_available": {i: round(v.p_available, 4) for i, v in zip(unique, verdicts)}}
    return kept, {d: o for d, o in duplicates.items() if o not in rejected}, rejected, stats
