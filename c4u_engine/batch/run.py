"""`c4u batch` on one machine: a groups JSONL through Engine.select_many into an append-only results JSONL.

Resumable (--resume skips the ids OUT already holds), one record per item (its selection or its error), a progress
bar (tqdm: items/s, ETA) and a summary at the end. Ctrl-C once: no new items, the ones in flight finish and are
written; twice: they are dropped. Either way the exit status is non-zero and the counts are printed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from c4u_engine.batch.items_file import count_lines, read_items
from c4u_engine.batch.results_file import ResultsFile, result_record
from c4u_engine.batch.stream import BatchItem, BatchResult, FailedItem
from c4u_engine.errors import InvalidInputError, RequestCancelledError

INTERRUPTED_EXIT = 130  # as a shell reports a process stopped by SIGINT


@dataclass
class BatchSummary:
    done: int = 0  # selections written this run
    failed: int = 0  # error records written this run
    skipped: int = 0  # ids already in OUT (--resume)
    dropped: int = 0  # in flight when a second Ctrl-C came: not written, done by the next --resume
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def selections_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "selections_per_s": round(self.selections_per_s, 3)}

    def text(self) -> str:
        line = (f"{self.done} done, {self.failed} failed, {self.skipped} skipped (already in the output) in "
                f"{self.seconds:.1f} s: {self.selections_per_s:.2f} selections/s")
        if self.interrupted:
            line += f"; interrupted ({self.dropped} in flight dropped): run again with --resume to finish"
        return line


def pending_items(source: Path, done_ids: set[str], summary: BatchSummary) -> Iterator[BatchItem | FailedItem]:
    """The input's items whose ids are not done; a repeated id is an error record (its results would be ambiguous)."""
    seen: set[str] = set()
    for item in read_items(source):
        if item.id in done_ids:
            summary.skipped += 1
            continue
        if item.id in seen:
            yield FailedItem(item.id, InvalidInputError(f"id {item.id!r} appears more than once in {source}"))
            continue
        seen.add(item.id)
        yield item


def run_batch(engine: Any, source: str | Path, out: str | Path, *, options: Mapping[str, Any] | None = None,
              resume: bool = False, max_in_flight: int | None = None, progress: bool | None = None,
              log=sys.stderr) -> BatchSummary:
    """Select for every group of `source` with `engine` (Engine.select keywords in `options`) into `out`.
    progress: None shows the bar on a terminal only."""
    source = Path(source)
    if not source.is_file():  # before OUT is created, and a typed error rather than count_lines' FileNotFoundError
        raise InvalidInputError(f"{source}: no such groups JSONL file")
    results = ResultsFile(out, resume=resume)
    summary = BatchSummary()
    total = count_lines(source)
    stream = engine.select_many(pending_items(source, results.done_ids, summary), ordered=False,
                                max_in_flight=max_in_flight, **dict(options or {}))
    restore = _on_sigint(stream, summary, log)
    t0 = time.perf_counter()
    try:
        with _progress(total, len(results.done_ids), progress) as bar:
            for result in stream:
                if _cancelled(result, summary):
                    continue
                results.write(result_record(result))
                if result.ok:
                    summary.done += 1
                else:
                    summary.failed += 1
                bar.update(1)
                bar.set_postfix(failed=summary.failed, refresh=False)
    finally:
        summary.seconds = time.perf_counter() - t0
        restore()
        stream.close()
        results.close()
    return summary


def _cancelled(result: BatchResult, summary: BatchSummary) -> bool:
    """A result dropped by the second Ctrl-C: not written (its id stays undone for --resume)."""
    if summary.interrupted and isinstance(result.error, RequestCancelledError):
        summary.dropped += 1
        return True
    return False


def _on_sigint(stream: Any, summary: BatchSummary, log) -> Any:
    """First Ctrl-C: stop admitting; second: drop what is in flight. Returns what restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if not summary.interrupted:
            summary.interrupted = True
            stream.stop()
            print(f"\nc4u batch: interrupted; finishing the {stream.in_flight} item(s) in flight (Ctrl-C again "
                  f"drops them)", file=log, flush=True)
        else:
            stream.close()

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _progress(total: int, already: int, show: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, initial=min(already, total), unit="group", dynamic_ncols=True, smoothing=0.1,
                disable=None if show is None else not show, file=sys.stderr)
