"""Evaluation of a checkpoint on a CreativePair-format directory, through the public c4u_engine.Engine.

For each mode (fast, reason, hybrid):
- pairs: each pair is judged in both orders with Engine.select(round_robin, both orders): accuracy over the 2N
  ordered comparisons, in the original and the swapped order separately, order consistency (both orders name the
  same creative), both orders correct, the accuracy of the engine's combined pick (Selection.winner) and the share
  of unreadable answers. In hybrid mode an ordered comparison that was re-judged with reasoning counts with its
  reasoned answer.
- groups (groups.jsonl, when present): accuracy of Selection.winner (knockout, both orders) against the best index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from c4u_engine.data.creative_pair import GROUPS_FILE, PairRecord, load_groups, load_pairs
from c4u_engine.selection.policy import MODES
from c4u_engine.errors import InvalidInputError

PAIR_METRICS = ("accuracy", "accuracy_original_order", "accuracy_swapped_order", "order_consistency",
                "both_orders_correct", "pair_winner_accuracy", "unparsed")


def _profile(record: Any) -> dict[str, Any]:
    return {"title": record.product_title, "queries": list(record.query)}


def _pair_metrics(engine: Any, pairs: Sequence[PairRecord], mode: str, max_new_tokens: int) -> dict[str, float]:
    correct = {0: 0, 1: 0}  # by order: 0 = original (image_a first), 1 = swapped
    consistent = both = winner_ok = unparsed = 0
    for record in pairs:
        best = 0 if record.label == "A" else 1
        selection = engine.select([str(record.image_a), str(record.image_b)], _profile(record), mode=mode,
                                  strategy="round_robin", both_orders=True, max_new_tokens=max_new_tokens,
                                  use_cache=False)
        final = {(c.first, c.second): c for c in selection.comparisons}  # reasoned ones come last in hybrid
        picks = []
        for order, key in enumerate(((0, 1), (1, 0))):
            comparison = final.get(key)
            pick = comparison.winner if comparison is not None else None
            unparsed += pick is None
            correct[order] += pick == best
            picks.append(pick)
        consistent += picks[0] is not None and picks[0] == picks[1]
        both += picks[0] == best and picks[1] == best
        winner_ok += selection.winner == best
    n = len(pairs)
    return {"accuracy": (correct[0] + correct[1]) / (2 * n), "accuracy_original_order": correct[0] / n,
            "accuracy_swapped_order": correct[1] / n, "order_consistency": consistent / n,
            "both_orders_correct": both / n, "pair_winner_accuracy": winner_ok / n, "unparsed": unparsed / (2 * n)}


def evaluate(model_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], *, split: str | None = "test",
             modes: Sequence[str] = MODES, max_pairs: int | None = None, max_groups: int | None = None,
             max_new_tokens: int = 384, engine: Any = None) -> dict[str, Any]:
    """Metrics per mode: {"pairs": n, "groups": m, "fast": {...}, "reason": {...}, "hybrid": {...}}.

    split: the pair split to read (None: every pair file of the directory). Groups are read from groups.jsonl when
    the directory has one (group_accuracy is None otherwise). engine: an Engine to reuse (default: a new one)."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InvalidInputError(f"modes={list(modes)}; valid modes: {list(MODES)}")
    pairs = load_pairs(data_dir, split)[:max_pairs]
    groups = load_groups(data_dir)[:max_groups] if (Path(data_dir) / GROUPS_FILE).is_file() else []
    if not pairs and not groups:
        raise InvalidInputError(f"{data_dir}: no pairs (split {split!r}) and no groups to evaluate")
    if engine is None:
        from c4u_engine.api import Engine

        engine = Engine(model_dir)
    report: dict[str, Any] = {"model_dir": str(model_dir), "data_dir": str(data_dir), "split": split,
                              "pairs": len(pairs), "groups": len(groups)}
    for mode in modes:
        t0 = time.perf_counter()
        result: dict[str, Any] = dict.fromkeys(PAIR_METRICS)
        if pairs:
            result.update(_pair_metrics(engine, pairs, mode, max_new_tokens))
        result["group_accuracy"] = None
        if groups:
            hits = sum(engine.select([str(p) for p in g.images], _profile(g), mode=mode, strategy="knockout",
                                     both_orders=True, max_new_tokens=max_new_tokens, use_cache=False).winner == g.best
                       for g in groups)
            result["group_accuracy"] = hits / len(groups)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        report[mode] = result
    return report


def format_report(report: dict[str, Any]) -> str:
    """The metrics as a text table: one row per metric, one column per mode."""
    modes = [m for m in MODES if m in report]
    rows = [*PAIR_METRICS, "group_accuracy", "seconds"]
    width = max(len(r) for r in rows)
    lines = [f"{report['model_dir']} on {report['data_dir']} (split {report['split']}): "
             f"{report['pairs']} pairs, {report['groups']} groups",
             " " * width + "".join(f"{m:>10}" for m in modes)]
    for row in rows:
        cells = []
        for m in modes:
            value = report[m].get(row)
            if value is None:
                cells.append(f"{'-':>10}")
            else:
                cells.append(f"{value:>10.1f}" if row == "seconds" else f"{value:>10.3f}")
        lines.append(f"{row:<{width}}" + "".join(cells))
    return "\n".join(lines)
