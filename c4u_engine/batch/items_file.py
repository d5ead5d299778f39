"""The input of `c4u batch`: a JSONL of groups, one selection per line, read lazily (any length, bounded memory).

Two shapes of line are read, and may be mixed:

    {"id": "g000001", "images": ["images/a.png", ...], "product_title": "...", "query": ["...", ...], ...}
        the groups.jsonl that `python -m c4u_engine.data make` writes (extra fields such as best/split/meta are
        ignored);
    {"id": "p-17", "images": ["a.png", "/data/b.png"], "profile": {"title": "...", "queries": [...],
     "extra": "..."}, "product_image": "cutouts/p-17.png"}
        the plain form (product_image is optional: the cut-out screening compares each ad with).

Image paths are local files, relative to the JSONL's directory or absolute: the user runs the batch on their own
files. URLs are refused (nothing is fetched), as in `c4u select`. A line without an id gets "#<line number>". A line
that cannot be read becomes a FailedItem with its id (or "#<line>") and the reason, in its place: one bad line never
stops a catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from c4u_engine.batch.stream import BatchItem, FailedItem
from c4u_engine.data.creative_pair import json_object
from c4u_engine.errors import C4UError, InvalidInputError
from c4u_engine.profile import Profile

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def read_items(path: str | Path) -> Iterator[BatchItem | FailedItem]:
    """BatchItem (images as absolute paths, a Profile, options holding product_image when given) or FailedItem per
    non-blank line, in file order. A file that cannot be opened raises InvalidInputError."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such groups JSONL file")
    root = path.parent.absolute()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield item_from_line(line, root, f"{path}:{number}", f"#{number}")


def item_from_line(line: str, root: Path, where: str, fallback_id: str | None) -> BatchItem | FailedItem:
    """One line of the input as a BatchItem, or a FailedItem saying why not. fallback_id: the id of a line without
    one (None: such a line is an error, as under --ray, where a line number means nothing)."""
    try:
        obj = json_object(line, where)
    except InvalidInputError as exc:
        return FailedItem(fallback_id or "#?", exc)
    ident = obj.get("id")
    if not isinstance(ident, (str, int)) or isinstance(ident, bool) or not str(ident).strip():
        if fallback_id is None:
            return FailedItem("#?", InvalidInputError(f"{where}: the line has no 'id' (needed with --ray)"))
        ident = fallback_id
    try:
        return parse_item(obj, root, where, str(ident))
    except C4UError as exc:
        return FailedItem(str(ident), exc)


def count_lines(path: str | Path) -> int:
    """Non-blank lines (the progress bar's total), read in binary chunks: fast on millions of lines."""
    count = 0
    with open(path, "rb") as fh:
        for line in fh:
            count += bool(line.strip())
    return count


def parse_item(obj: dict, root: Path, where: str, ident: str) -> BatchItem:
    images = obj.get("images")
    if not isinstance(images, list) or not images:
        raise InvalidInputError(f"{where}: field 'images': expected a non-empty list of image paths")
    paths = [_local_path(v, root, f"{where}: field 'images'[{i}]") for i, v in enumerate(images)]
    options: dict[str, Any] = {}
    if obj.get("product_image") is not None:
        options["product_image"] = _local_path(obj["product_image"], root, f"{where}: field 'product_image'")
    return BatchItem(paths, _profile(obj, where), options, ident)


def _profile(obj: dict, where: str) -> Profile:
    value = obj["profile"] if "profile" in obj else {
        "title": obj.get("product_title", obj.get("title")), "queries": obj.get("query", obj.get("queries")) or (),
        "extra": obj.get("extra") or ""}
    try:
        return Profile.coerce(value)
    except C4UError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def _local_path(value: Any, root: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: expected an image path, got {value!r}")
    if _URL.match(value):
        raise InvalidInputError(f"{where}: {value!r} is a URL; c4u batch reads local files only (download them "
                                f"first)")
    return str(root / value)  # an absolute value stays itself
