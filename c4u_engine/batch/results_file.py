"""The output of `c4u batch`: an append-only JSONL, one record per finished item, each written whole and flushed.

    {"id": ..., "images": [...], "winner": ..., "ranking": [...], ...}   a selection: `c4u select --json`'s schema
    {"id": ..., "error": {"type": "InvalidImageError", "message": "..."}}  an item that failed (the server's form)

Each record is one write() of one whole line on a file opened for appending, so an interrupted run leaves at most its
in-flight items undone and, short of a kill in the middle of that write, never half a line. `--resume` reads the ids
already written (a half last line, left by a kill, is cut off first) and the run skips them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from c4u_engine.batch.stream import BatchResult
from c4u_engine.errors import InvalidInputError
from c4u_engine.serving.schema import error_json, selection_json


def result_record(result: BatchResult) -> dict[str, Any]:
    """The output line of one result; a selection's images are named by their paths."""
    if result.error is not None:
        return {"id": result.id, **error_json(result.error)}
    return {"id": result.id, **selection_json(result.selection, [str(p) for p in result.images])}


class ResultsFile:
    """OUT, opened for appending. An existing non-empty OUT needs resume=True (its ids are then `done_ids`)."""

    def __init__(self, path: str | Path, *, resume: bool) -> None:
        self.path = Path(path)
        self.done_ids: set[str] = set()
        if self.path.exists() and self.path.stat().st_size and not resume:
            raise InvalidInputError(f"{self.path} already holds results: pass --resume to skip the ids it holds "
                                    f"and append the rest, or choose another --out")
        if resume and self.path.exists():
            self.done_ids = read_done_ids(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # one write() for a regular file; the loop only guards against a short write
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_done_ids(path: Path) -> set[str]:
    """The ids in a results file; a last line without its newline (a kill mid-write) is cut off the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    ids: set[str] = set()
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(f"{path}:{number}: not a c4u batch result line; is --out the right file?") \
                from None
    return ids
