"""The CreativePair JSONL format: pair records (training, accuracy) and group records (winner accuracy).

A dataset directory holds images and JSONL files whose image paths are relative to the JSONL file:

    train.jsonl / val.jsonl / test.jsonl   pair records, one split each (or a single pairs.jsonl)
    groups.jsonl                           group records: N candidates and the index of the best

Pair record:  {"image_a": "images/p0_a.png", "image_b": ..., "product_title": str, "query": [str, ...],
               "label": "A" | "B", "reasoning": str, "id": str?, "split": str?, "meta": {...}?}
Group record: {"images": [...], "product_title": str, "query": [str, ...], "best": int, "id"?, "split"?, "meta"?}

The loader works on any such directory (the real CreativePair data included): every record is validated and a
bad one raises InvalidInputError naming file:line and the field. Image paths may not be absolute nor escape the
JSONL's directory ("../"); symlinks inside the directory are followed (the directory's owner placed them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c4u_engine.errors import InvalidInputError

PAIR_SPLITS = ("train", "val", "test")
PAIRS_FILE, GROUPS_FILE = "pairs.jsonl", "groups.jsonl"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class PairRecord:
    """One comparison: which of two creatives the user clicked more. Image paths are absolute once loaded."""

    image_a: Path
    image_b: Path
    product_title: str
    query: tuple[str, ...]
    label: str  # "A" or "B"
    reasoning: str = ""
    id: str | None = None
    split: str | None = None
    meta: dict[str, Any] | None = field(default=None, repr=False)
    source: str = field(default="", compare=False, repr=False)  # "file:line" it was loaded from


@dataclass(frozen=True)
class GroupRecord:
    """N candidate creatives of one product for one user, and the index of the best one."""

    images: tuple[Path, ...]
    product_title: str
    query: tuple[str, ...]
    best: int
    id: str | None = None
    split: str | None = None
    meta: dict[str, Any] | None = field(default=None, repr=False)
    source: str = field(default="", compare=False, repr=False)  # "file:line" it was loaded from


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_pairs(source: str | os.PathLike[str], split: str | None = None, *, check_files: bool = True
               ) -> list[PairRecord]:
    """Pair records from a directory or one JSONL file.

    Directory: split=None reads train/val/test.jsonl (those present), else pairs.jsonl; split="x" reads x.jsonl.
    File: every record, or with split="x" those whose "split" field is "x". check_files: images must exist.
    """
    files, filter_split = _resolve_files(Path(source), split, pairs=True)
    records: list[PairRecord] = []
    for path in files:
        records.extend(_parse_file(path, _pair_from_json, check_files))
    return _filtered(records, filter_split, _unique_ids)


def load_groups(source: str | os.PathLike[str], split: str | None = None, *, check_files: bool = True
                ) -> list[GroupRecord]:
    """Group records from a directory (its groups.jsonl) or one JSONL file; split filters on the "split" field."""
    files, filter_split = _resolve_files(Path(source), split, pairs=False)
    records: list[GroupRecord] = []
    for path in files:
        records.extend(_parse_file(path, _group_from_json, check_files))
    return _filtered(records, filter_split, _unique_ids)


def _resolve_files(source: Path, split: str | None, pairs: bool) -> tuple[list[Path], str | None]:
    if split is not None and (not isinstance(split, str) or not _SPLIT_NAME.match(split)):
        raise InvalidInputError(f"split={split!r}: expected a name of letters, digits, '_' or '-' (e.g. 'train')")
    if source.is_file():
        return [source], split
    if not source.is_dir():
        raise InvalidInputError(f"{source}: no such dataset directory or JSONL file")
    if not pairs:
        path = source / GROUPS_FILE
        if not path.is_file():
            raise InvalidInputError(f"{source}: no {GROUPS_FILE} in this dataset directory")
        return [path], split
    if split is not None:
        path = source / f"{split}.jsonl"
        if not path.is_file():
            present = sorted(p.name for p in source.glob("*.jsonl"))
            raise InvalidInputError(f"{source}: no {split}.jsonl for split {split!r}; JSONL files present: {present}")
        return [path], None
    files = [source / f"{s}.jsonl" for s in PAIR_SPLITS if (source / f"{s}.jsonl").is_file()]
    if not files and (source / PAIRS_FILE).is_file():
        files = [source / PAIRS_FILE]
    if not files:
        raise InvalidInputError(f"{source}: no pair files; expected train.jsonl/val.jsonl/test.jsonl or {PAIRS_FILE}")
    return files, None


def _filtered(records: list, split: str | None, check: Any) -> list:
    check(records)
    if split is None:
        return records
    for record in records:
        if record.split is None:
            raise InvalidInputError(f"{record.source}: record has no 'split' field; cannot select split {split!r}")
    return [r for r in records if r.split == split]


def _unique_ids(records: list) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id is None:
            continue
        if record.id in seen:
            raise InvalidInputError(
                f"{record.source}: field 'id': duplicate id {record.id!r} (first at {seen[record.id]})")
        seen[record.id] = record.source


def jsonl_objects(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, "path:line", object) for each non-blank line of a JSONL file; InvalidInputError naming the
    file and line for a line that is not a JSON object."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                where = f"{path}:{number}"
                yield number, where, json_object(line, where)


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a JSON object; InvalidInputError naming `where` when it is not valid JSON or not an object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _parse_file(path: Path, build: Any, check_files: bool) -> list:
    return [build(obj, where, path.parent, check_files) for _, where, obj in jsonl_objects(path)]


def _field(obj: dict, name: str, where: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise InvalidInputError(f"{where}: field {name!r} is missing")
        return None
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidInputError(f"{where}: field {name!r}: expected {names}, got {type(value).__name__}")
    return value


def _text(obj: dict, name: str, where: str, required: bool = True) -> str | None:
    value = _field(obj, name, where, str, required)
    if required and not value.strip():
        raise InvalidInputError(f"{where}: field {name!r} is empty")
    return value


def _queries(obj: dict, where: str) -> tuple[str, ...]:
    value = _field(obj, "query", where, (list, str))
    items = [value] if isinstance(value, str) else value  # a single query string is accepted
    if not items:
        raise InvalidInputError(f"{where}: field 'query': expected at least one query")
    for i, q in enumerate(items):
        if not isinstance(q, str) or not q.strip():
            raise InvalidInputError(f"{where}: field 'query'[{i}]: expected a non-empty string, got {q!r}")
    return tuple(items)


def _image(value: Any, name: str, where: str, root: Path, check_files: bool) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: field {name}: expected a relative image path, got {value!r}")
    if os.path.isabs(value) or value.startswith(("/", "\\")):
        raise InvalidInputError(f"{where}: field {name}: absolute path {value!r} refused; paths are relative to "
                                f"the JSONL's directory")
    normal = os.path.normpath(value)
    if normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("../"):
        raise InvalidInputError(f"{where}: field {name}: path {value!r} escapes the dataset directory {root}")
    path = (root / normal).absolute()
    if check_files and not path.is_file():
        raise InvalidInputError(f"{where}: field {name}: image file {path} does not exist")
    return path


def _common(obj: dict, where: str) -> dict[str, Any]:
    ident = _field(obj, "id", where, (str, int), required=False)
    split = _text(obj, "split", where, required=False)
    meta = _field(obj, "meta", where, dict, required=False)
    return {"id": None if ident is None else str(ident), "split": split, "meta": meta, "source": where}


def _pair_from_json(obj: dict, where: str, root: Path, check_files: bool) -> PairRecord:
    label = obj.get("label")
    if label not in ("A", "B"):
        raise InvalidInputError(f"{where}: field 'label': expected 'A' or 'B', got {label!r}")
    return PairRecord(
        image_a=_image(obj.get("image_a"), "'image_a'", where, root, check_files),
        image_b=_image(obj.get("image_b"), "'image_b'", where, root, check_files),
        product_title=_text(obj, "product_title", where),
        query=_queries(obj, where),
        label=label,
        reasoning=_text(obj, "reasoning", where, required=False) or "",
        **_common(obj, where),
    )


def _group_from_json(obj: dict, where: str, root: Path, check_files: bool) -> GroupRecord:
    images = _field(obj, "images", where, list)
    if len(images) < 2:
        raise InvalidInputError(f"{where}: field 'images': expected at least 2 images, got {len(images)}")
    paths = tuple(_image(v, f"'images'[{i}]", where, root, check_files) for i, v in enumerate(images))
    best = _field(obj, "best", where, int)
    if not 0 <= best < len(paths):
        raise InvalidInputError(f"{where}: field 'best': {best} is not an index of the {len(paths)} images")
    return GroupRecord(images=paths, product_title=_text(obj, "product_title", where), query=_queries(obj, where),
                       best=best, **_common(obj, where))


# ---------------------------------------------------------------------------------------------------------------
# writing


def _relative(path: Path, root: Path, what: str) -> str:
    rel = os.path.relpath(Path(path).absolute(), root.absolute())
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise InvalidInputError(f"{what}: image {path} is outside the JSONL's directory {root}")
    return Path(rel).as_posix()


def pair_to_json(record: PairRecord, root: Path) -> dict[str, Any]:
    """The JSON object for one pair record, image paths relative to root (the JSONL's directory)."""
    obj: dict[str, Any] = {}
    if record.id is not None:
        obj["id"] = record.id
    if record.split is not None:
        obj["split"] = record.split
    obj.update(image_a=_relative(record.image_a, root, "image_a"), image_b=_relative(record.image_b, root, "image_b"),
               product_title=record.product_title, query=list(record.query), label=record.label,
               reasoning=record.reasoning)
    if record.meta is not None:
        obj["meta"] = record.meta
    return obj


def group_to_json(record: GroupRecord, root: Path) -> dict[str, Any]:
    """The JSON object for one group record, image paths relative to root."""
    obj: dict[str, Any] = {}
    if record.id is not None:
        obj["id"] = record.id
    if record.split is not None:
        obj["split"] = record.split
    obj.update(images=[_relative(p, root, f"images[{i}]") for i, p in enumerate(record.images)],
               product_title=record.product_title, query=list(record.query), best=record.best)
    if record.meta is not None:
        obj["meta"] = record.meta
    return obj


def _write(path: Path, objects: Iterable[dict[str, Any]]) -> None:
    # Written to a temporary file then renamed, so a reader never sees half a file.
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for obj in objects:
                fh.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_pairs(path: str | os.PathLike[str], records: Iterable[PairRecord]) -> None:
    """Write pair records as JSONL; their images must lie under the file's directory."""
    root = Path(path).parent
    _write(Path(path), (pair_to_json(r, root) for r in records))


def write_groups(path: str | os.PathLike[str], records: Iterable[GroupRecord]) -> None:
    """Write group records as JSONL; their images must lie under the file's directory."""
    root = Path(path).parent
    _write(Path(path), (group_to_json(r, root) for r in records))
