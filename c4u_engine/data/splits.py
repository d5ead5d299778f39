"""Train/val/test assignment of pair records: a stable hash of (seed, record id), so re-splitting is reproducible
and a record keeps its split when the dataset grows."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from c4u_engine.data.creative_pair import PAIR_SPLITS, PairRecord, load_pairs, write_pairs
from c4u_engine.errors import InvalidInputError


def assign_split(record_id: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" for a record id: test with probability test_fraction, val with val_fraction."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise InvalidInputError(f"assign_split: val_fraction={val_fraction}, test_fraction={test_fraction}; "
                                "expected fractions summing to at most 1")
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def write_splits(root: str | os.PathLike[str], records: Sequence[PairRecord]) -> dict[str, int]:
    """Write records to root/{train,val,test}.jsonl by their split field (all three files, maybe empty)."""
    by_split: dict[str, list[PairRecord]] = {s: [] for s in PAIR_SPLITS}
    for record in records:
        if record.split not in by_split:
            raise InvalidInputError(f"write_splits: record {record.id!r} has split {record.split!r}; "
                                    f"valid values: {PAIR_SPLITS}")
        by_split[record.split].append(record)
    for split, items in by_split.items():
        write_pairs(Path(root) / f"{split}.jsonl", items)
    return {s: len(v) for s, v in by_split.items()}


def split_dataset(root: str | os.PathLike[str], val_fraction: float = 0.05, test_fraction: float = 0.1,
                  seed: int = 0) -> dict[str, int]:
    """Re-split the pairs of a dataset directory (its split files, else pairs.jsonl) into train/val/test.jsonl.

    Records without an id are keyed by their image_a path relative to root. Returns the count per split.
    """
    root = Path(root)
    records = load_pairs(root)
    keyed = []
    for record in records:
        key = record.id if record.id is not None else Path(os.path.relpath(record.image_a, root)).as_posix()
        keyed.append(replace(record, split=assign_split(key, seed, val_fraction, test_fraction)))
    return write_splits(root, keyed)
