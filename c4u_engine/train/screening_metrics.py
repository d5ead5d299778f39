"""Metrics of the screening card: per-class precision/recall/F1, binary availability P/R/F1/AP, and a paired
bootstrap of an AP difference (is one model's lead over another larger than the test set's sampling noise?)."""

from __future__ import annotations

import numpy as np


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """AP as the area under the step precision-recall curve (scikit-learn's definition)."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    hits = positive[order]
    if not hits.any():
        return float("nan")
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def classification_report(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...],
                          threshold: float = 0.5) -> dict:
    """Per-class P/R/F1 of the argmax, the confusion matrix, and binary availability (class 0) at `threshold`."""
    pred = probs.argmax(1)
    per_class = {}
    for k, name in enumerate(classes):
        tp = int(((pred == k) & (labels == k)).sum())
        p, r, f = prf(tp, int(((pred == k) & (labels != k)).sum()), int(((pred != k) & (labels == k)).sum()))
        per_class[name] = {"precision": p, "recall": r, "f1": f, "support": int((labels == k).sum())}
    pos, score = labels == 0, probs[:, 0]
    said = score >= threshold
    p, r, f = prf(int((said & pos).sum()), int((said & ~pos).sum()), int((~said & pos).sum()))
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    return {"accuracy": float((pred == labels).mean()), "per_class": per_class,
            "binary": {"precision": p, "recall": r, "f1": f, "ap": average_precision(pos, score),
                       "threshold": threshold, "n": int(len(labels)), "positives": int(pos.sum())},
            "confusion": confusion.tolist()}


def bootstrap_ap_difference(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n: int = 1000,
                            seed: int = 0) -> dict:
    """AP(a) - AP(b) on the test set and its 95% paired-bootstrap interval (resampling test items)."""
    rng = np.random.default_rng(seed)
    m = len(positive)
    diffs = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, m, m)
        diffs[i] = average_precision(positive[idx], score_a[idx]) - average_precision(positive[idx], score_b[idx])
    return {"difference": average_precision(positive, score_a) - average_precision(positive, score_b),
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))], "resamples": n}
