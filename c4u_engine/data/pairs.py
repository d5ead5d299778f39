"""Sampling creative pairs and N-candidate groups, and writing a synthetic CreativePair dataset.

A pair is two creatives of one product (same title, same product colour) shown to one profile. Like CreativePair,
which keeps pairs whose CTR gap is large, a pair is kept only when its appeal gap is at least `min_gap`, and only
when the noise did not flip the order the noiseless appeal gives (so the reasoning can argue for the winner).
Which creative is A is a coin flip. Everything is drawn from numpy generators seeded with (seed, stream, index):
the same seed gives the same records and the same image bytes, whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from c4u_engine.data.appeal import appeal_breakdown, click_appeal
from c4u_engine.data.catalog import Product, Profile, sample_product, sample_profile
from c4u_engine.data.creative_pair import GROUPS_FILE, PAIR_SPLITS, GroupRecord, PairRecord, write_groups
from c4u_engine.data.creatives import BACKGROUNDS, CROPS, LAYOUTS, CreativeSpec, render
from c4u_engine.data.reasoning import TOO_SIMILAR, make_reasoning
from c4u_engine.data.splits import assign_split, write_splits
from c4u_engine.errors import InvalidInputError, LimitExceededError

MIN_GAP = 0.5
MIN_GROUP_MARGIN = 0.3
MAX_TRIES = 500
_PAIR_STREAM, _GROUP_STREAM = 1, 2
VARIABLE_ATTRIBUTES = ("price_tag", "selling_point", "call_to_action", "clutter", "model", "props", "layout",
                       "product_scale", "crop", "background", "background_hue", "angle", "seed")


@dataclass(frozen=True)
class PairSample:
    """A kept pair before rendering: label is the creative with the higher (noisy) appeal."""

    product: Product
    profile: Profile
    spec_a: CreativeSpec
    spec_b: CreativeSpec
    appeal_a: float
    appeal_b: float
    label: str
    reasoning: str


@dataclass(frozen=True)
class GroupSample:
    """N candidates of one product for one profile; best is the index with the highest appeal."""

    product: Product
    profile: Profile
    specs: tuple[CreativeSpec, ...]
    appeals: tuple[float, ...]
    best: int


def _pick(rng: np.random.Generator, values: tuple | list, p: list[float] | None = None) -> Any:
    return values[int(rng.choice(len(values), p=p))]


def _scale(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(0.3, 0.78)), 3)


def _angle(rng: np.random.Generator) -> float:
    return 0.0 if rng.random() < 0.5 else round(float(rng.uniform(-25.0, 25.0)), 1)


def _hue(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(0.0, 360.0)), 1) % 360.0


def sample_spec(rng: np.random.Generator, product: Product, product_hue: float | None = None) -> CreativeSpec:
    """A random creative for the product; every attribute the appeal reads is present often enough to learn."""
    return CreativeSpec(
        category=product.category,
        product_hue=_hue(rng) if product_hue is None else product_hue,
        product_scale=_scale(rng),
        crop="none" if rng.random() < 0.7 else _pick(rng, CROPS[1:]),
        angle=_angle(rng),
        background=_pick(rng, BACKGROUNDS),
        background_hue=_hue(rng),
        layout=_pick(rng, LAYOUTS),
        side=1 if rng.random() < 0.5 else -1,
        selling_point=product.selling_point if rng.random() < 0.5 else "",
        price_tag=product.price_text if rng.random() < 0.4 else "",
        call_to_action=bool(rng.random() < 0.5),
        clutter=int(_pick(rng, (0, 1, 2), [0.6, 0.25, 0.15])),
        model=bool(rng.random() < 0.35),
        props=int(_pick(rng, (0, 1, 2, 3), [0.4, 0.3, 0.2, 0.1])),
        seed=int(rng.integers(2**31)),
    )


def _changed(rng: np.random.Generator, spec: CreativeSpec, product: Product, name: str) -> CreativeSpec:
    """spec with one attribute set to a different value."""
    current = getattr(spec, name)
    if name == "price_tag":
        value: Any = "" if current else product.price_text
    elif name == "selling_point":
        value = "" if current else product.selling_point
    elif name in ("call_to_action", "model"):
        value = not current
    elif name == "clutter":
        value = _pick(rng, [v for v in (0, 1, 2) if v != current])
    elif name == "props":
        value = _pick(rng, [v for v in (0, 1, 2, 3) if v != current])
    elif name == "layout":
        value = _pick(rng, [v for v in LAYOUTS if v != current])
    elif name == "background":
        value = _pick(rng, [v for v in BACKGROUNDS if v != current])
    elif name == "crop":
        value = "none" if current != "none" else _pick(rng, CROPS[1:])
    elif name == "product_scale":
        value = _scale(rng)
    elif name == "background_hue":
        value = _hue(rng)
    elif name == "angle":
        value = _angle(rng)
    else:  # seed
        value = int(rng.integers(2**31))
    return replace(spec, **{name: value})


def vary_spec(rng: np.random.Generator, spec: CreativeSpec, product: Product, n_changes: int) -> CreativeSpec:
    """spec with n_changes distinct attributes re-drawn: a controlled contrast, like A/B variants of one ad."""
    names = rng.choice(len(VARIABLE_ATTRIBUTES), size=n_changes, replace=False)
    for i in sorted(int(n) for n in names):
        spec = _changed(rng, spec, product, VARIABLE_ATTRIBUTES[i])
    return spec


def _candidate(rng: np.random.Generator, base: CreativeSpec, product: Product) -> CreativeSpec:
    # 60%: a variant of the base differing in 1-3 attributes; 40%: a fresh creative of the same product.
    if rng.random() < 0.6:
        return vary_spec(rng, base, product, int(rng.integers(1, 4)))
    return sample_spec(rng, product, base.product_hue)


def sample_pair(rng: np.random.Generator, min_gap: float = MIN_GAP, product: Product | None = None,
                profile: Profile | None = None) -> PairSample:
    """A kept pair for a product and profile (drawn from rng when not given)."""
    product = product or sample_product(rng)
    profile = profile or sample_profile(rng, product.category)
    title, queries = product.title, profile.queries
    for _ in range(MAX_TRIES):
        first = sample_spec(rng, product)
        second = _candidate(rng, first, product)
        a1, a2 = click_appeal(first, title, queries), click_appeal(second, title, queries)
        clean_gap = sum(appeal_breakdown(first, title, queries).values()) - sum(
            appeal_breakdown(second, title, queries).values())
        if abs(a1 - a2) < min_gap or abs(clean_gap) < TOO_SIMILAR or (a1 > a2) != (clean_gap > 0):
            continue
        if rng.random() < 0.5:
            first, second, a1, a2 = second, first, a2, a1
        label = "A" if a1 > a2 else "B"
        reasoning = make_reasoning(first, second, title, queries, label)
        return PairSample(product, profile, first, second, a1, a2, label, reasoning)
    raise LimitExceededError(f"sample_pair: no pair with appeal gap >= {min_gap} in {MAX_TRIES} tries for "
                             f"{product.title!r}; lower min_gap")


def sample_group(rng: np.random.Generator, group_size: int, min_margin: float = MIN_GROUP_MARGIN) -> GroupSample:
    """group_size candidates of one product for one profile whose best leads the runner-up by >= min_margin."""
    if group_size < 2:
        raise InvalidInputError(f"sample_group: group_size={group_size}; expected >= 2")
    product = sample_product(rng)
    profile = sample_profile(rng, product.category)
    title, queries = product.title, profile.queries
    for _ in range(MAX_TRIES):
        base = sample_spec(rng, product)
        specs = (base,) + tuple(_candidate(rng, base, product) for _ in range(group_size - 1))
        appeals = np.array([click_appeal(s, title, queries) for s in specs])
        clean = np.array([sum(appeal_breakdown(s, title, queries).values()) for s in specs])
        order, clean_order = np.argsort(-appeals, kind="stable"), np.argsort(-clean, kind="stable")
        if (appeals[order[0]] - appeals[order[1]] < min_margin or order[0] != clean_order[0]
                or clean[clean_order[0]] - clean[clean_order[1]] < TOO_SIMILAR):
            continue
        perm = rng.permutation(group_size)  # the base must not always sit at index 0
        specs = tuple(specs[i] for i in perm)
        appeals = appeals[perm]
        return GroupSample(product, profile, specs, tuple(float(a) for a in appeals), int(np.argmax(appeals)))
    raise LimitExceededError(f"sample_group: no group of {group_size} with a clear best in {MAX_TRIES} tries; "
                             f"lower min_margin")


# ---------------------------------------------------------------------------------------------------------------
# dataset writing


@dataclass(frozen=True)
class DatasetSummary:
    """What make_dataset wrote and how long it took."""

    out_dir: Path
    n_pairs: int
    n_groups: int
    splits: dict[str, int]
    labels: dict[str, int]
    seconds: float


def _save_png(image: Any, path: Path) -> None:
    image.save(path, format="PNG", compress_level=1)  # level 1: ~3x faster than the default, files ~20% larger


def _make_pair(job: tuple[Path, int, int, int, float, float, float]) -> PairRecord:
    out_dir, index, seed, size, min_gap, val_fraction, test_fraction = job
    sample = sample_pair(np.random.default_rng([seed, _PAIR_STREAM, index]), min_gap)
    record_id = f"p{index:06d}"
    paths = [out_dir / "images" / f"{record_id}_{side}.png" for side in ("a", "b")]
    for spec, path in zip((sample.spec_a, sample.spec_b), paths):
        _save_png(render(spec, size), path)
    meta = {"profile": sample.profile.kind, "appeal_a": round(sample.appeal_a, 4),
            "appeal_b": round(sample.appeal_b, 4), "spec_a": sample.spec_a.to_dict(), "spec_b": sample.spec_b.to_dict()}
    return PairRecord(paths[0], paths[1], sample.product.title, sample.profile.queries, sample.label,
                      sample.reasoning, record_id, assign_split(record_id, seed, val_fraction, test_fraction), meta)


def _make_group(job: tuple[Path, int, int, int, int]) -> GroupRecord:
    out_dir, index, seed, size, group_size = job
    sample = sample_group(np.random.default_rng([seed, _GROUP_STREAM, index]), group_size)
    record_id = f"g{index:06d}"
    paths = []
    for k, spec in enumerate(sample.specs):
        path = out_dir / "images" / f"{record_id}_{k}.png"
        _save_png(render(spec, size), path)
        paths.append(path)
    meta = {"profile": sample.profile.kind, "appeals": [round(a, 4) for a in sample.appeals],
            "specs": [s.to_dict() for s in sample.specs]}
    return GroupRecord(tuple(paths), sample.product.title, sample.profile.queries, sample.best, record_id, "test",
                       meta)


def make_dataset(out_dir: str | os.PathLike[str], n_pairs: int, seed: int, size: int = 224, *, n_groups: int = 0,
                 group_size: int = 4, val_fraction: float = 0.05, test_fraction: float = 0.1,
                 min_gap: float = MIN_GAP, workers: int = 1, overwrite: bool = False) -> DatasetSummary:
    """Write a synthetic CreativePair dataset: images/*.png, train/val/test.jsonl, groups.jsonl, manifest.json.

    Deterministic: the same arguments (workers aside) give byte-identical JSONL and PNG files.
    """
    out = Path(out_dir)
    if n_pairs < 0 or n_groups < 0:
        raise InvalidInputError(f"make_dataset: n_pairs={n_pairs}, n_groups={n_groups}; expected >= 0")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise InvalidInputError(f"make_dataset: val_fraction={val_fraction}, test_fraction={test_fraction}; "
                                "expected fractions summing to at most 1")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(f"make_dataset: {out} is not empty; choose an empty directory or overwrite=True")
    if workers < 1:
        raise InvalidInputError(f"make_dataset: workers={workers}; expected >= 1")
    (out / "images").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pair_jobs = [(out, i, seed, size, min_gap, val_fraction, test_fraction) for i in range(n_pairs)]
    group_jobs = [(out, i, seed, size, group_size) for i in range(n_groups)]
    if workers == 1:
        pairs = [_make_pair(job) for job in pair_jobs]
        groups = [_make_group(job) for job in group_jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pairs = list(pool.map(_make_pair, pair_jobs, chunksize=16))
            groups = list(pool.map(_make_group, group_jobs, chunksize=4))
    splits = write_splits(out, pairs)
    if n_groups:
        write_groups(out / GROUPS_FILE, groups)
    labels = {k: sum(p.label == k for p in pairs) for k in ("A", "B")}
    manifest = {"generator": "c4u_engine.data", "format_version": 1, "seed": seed, "size": size,
                "pairs": n_pairs, "groups": n_groups, "group_size": group_size, "min_gap": min_gap,
                "val_fraction": val_fraction, "test_fraction": test_fraction, "splits": splits, "labels": labels,
                "split_files": [f"{s}.jsonl" for s in PAIR_SPLITS], "groups_file": GROUPS_FILE if n_groups else None}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return DatasetSummary(out, n_pairs, n_groups, splits, labels, time.perf_counter() - start)


def make_held_out(out_dir: str | os.PathLike[str], seed: int, total_pairs: int, *, max_test_pairs: int | None = None,
                  n_groups: int = 0, size: int = 224, group_size: int = 4, val_fraction: float = 0.05,
                  test_fraction: float = 0.1, min_gap: float = MIN_GAP) -> DatasetSummary:
    """Only the test split (and the groups) of make_dataset(out_dir, total_pairs, seed, ...), byte-identical to its
    records, without rendering the training pairs: the first max_test_pairs test pairs in id order. For measuring
    a shipped model on its held-out data (e.g. benchmarks/bench_precision.py) without regenerating everything."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pairs: list[PairRecord] = []
    for index in range(total_pairs):
        if max_test_pairs is not None and len(pairs) >= max_test_pairs:
            break
        if assign_split(f"p{index:06d}", seed, val_fraction, test_fraction) == "test":
            pairs.append(_make_pair((out, index, seed, size, min_gap, val_fraction, test_fraction)))
    groups = [_make_group((out, i, seed, size, group_size)) for i in range(n_groups)]
    splits = write_splits(out, pairs)
    if n_groups:
        write_groups(out / GROUPS_FILE, groups)
    labels = {k: sum(p.label == k for p in pairs) for k in ("A", "B")}
    return DatasetSummary(out, len(pairs), n_groups, splits, labels, time.perf_counter() - start)
