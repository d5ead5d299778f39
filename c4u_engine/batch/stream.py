"""SelectionStream: many selections through one Engine, enough of them in flight to fill its scheduler.

A loop of `select()` calls hands the engine one request at a time, so its lanes never batch one selection's
comparisons with another's (reasoning mode loses about half its throughput that way). The stream pulls items from
any iterable on a feeder thread, submits them while fewer than `max_in_flight` are submitted and not yet handed to
the caller (so memory stays bounded however long the input: images are loaded only when an item is submitted), and
yields one BatchResult per item: its Selection, or the typed error that item met, in its place. One item's failure
never stops the others nor escapes the iterator; a full engine queue (OverloadedError, e.g. a server sharing the
engine) is waited out, not reported.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

from c4u_engine.errors import C4UError, InferenceError, InvalidInputError, OverloadedError, RequestCancelledError
from c4u_engine.selection.results import Selection

OVERLOADED_RETRY_S = (0.01, 0.5)  # first and longest wait before submitting again into a full queue


@dataclass(frozen=True)
class BatchItem:
    """One selection to make: images and profile as Engine.select takes them, its options (mode, strategy, ...:
    Engine.select's keywords) and an id of the caller's, carried into its result."""

    images: Any
    profile: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """What became of item `index` (its place in the input): `selection`, or `error` (a C4UError) when it failed."""

    index: int
    id: str | None
    selection: Selection | None = None
    error: C4UError | None = None
    seconds: float = 0.0  # from its submission to its result
    images: Any = None  # the item's images as given (None when the item itself could not be read)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FailedItem:
    """An item known to have failed before submission (a bad line of a file): reported in its place."""

    id: str | None
    error: C4UError


class _End:
    """The feeder is done: `count` items were taken from the input; `failure` is what the input itself raised."""

    def __init__(self, count: int, failure: BaseException | None) -> None:
        self.count, self.failure = count, failure


def as_batch_item(raw: Any) -> BatchItem:
    """A BatchItem from a BatchItem, an (images, profile[, options]) tuple or a dict with those keys (+ "id")."""
    if isinstance(raw, BatchItem):
        return raw
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - {"images", "profile", "options", "id"})
        if unknown or "images" not in raw or "profile" not in raw:
            raise InvalidInputError(f"an item as a dict needs 'images' and 'profile' (optional 'options', 'id'); "
                                    f"got keys {sorted(raw)}")
        raw_id = raw.get("id")
        return BatchItem(raw["images"], raw["profile"], raw.get("options") or {},
                         None if raw_id is None else str(raw_id))
    if isinstance(raw, tuple) and len(raw) in (2, 3):
        options = raw[2] if len(raw) == 3 else {}
        if not isinstance(options, Mapping):
            raise InvalidInputError(f"an item's options must be a mapping of Engine.select keywords, got "
                                    f"{type(options).__name__}")
        return BatchItem(raw[0], raw[1], options)
    raise InvalidInputError(f"an item must be a BatchItem, an (images, profile[, options]) tuple or a dict, got "
                            f"{type(raw).__name__}")


class SelectionStream:
    """Iterate it for BatchResults: in input order (ordered=True) or as they finish. `stop()` stops taking new items
    (the ones in flight still come out); `close()` also cancels those in flight (no results for them; their KV is
    released). A stream dropped before its end (a `break`, an exception) closes itself."""

    def __init__(self, engine: Any, items: Iterable[Any], *, max_in_flight: int, ordered: bool = True,
                 defaults: Mapping[str, Any] | None = None) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise InvalidInputError(f"max_in_flight must be a positive int, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        # The feeder thread and the iterator hold the state, not this handle: dropping the handle closes the stream.
        self._state = _StreamState(engine, max_in_flight, defaults)
        self._iterator = self._state.iterate(bool(ordered))
        threading.Thread(target=self._state.feed, args=(iter(items),), name="c4u-select-many", daemon=True).start()

    def __iter__(self) -> Iterator[BatchResult]:
        return self

    def __next__(self) -> BatchResult:
        return next(self._iterator)

    def __enter__(self) -> "SelectionStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_iterator"):  # not when __init__ refused its arguments
            self.close()

    @property
    def in_flight(self) -> int:
        """Items submitted whose selections have not finished yet."""
        return self._state.in_flight()

    def stop(self) -> None:
        """Take no more items; the ones already submitted still finish and come out."""
        self._state.stopping.set()

    def close(self) -> None:
        """Take no more items and cancel the ones in flight."""
        self._state.stopping.set()
        self._state.cancel_live()
        try:
            self._iterator.close()
        except ValueError:  # called while the iterator runs (a signal handler): it ends once the cancels arrive
            pass


class _StreamState:
    """The feeder thread's and the iterator's shared state."""

    def __init__(self, engine: Any, max_in_flight: int, defaults: Mapping[str, Any] | None) -> None:
        self.engine, self.defaults = engine, dict(defaults or {})
        self.slots = threading.Semaphore(max_in_flight)  # released when a result is handed out
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.closed = threading.Event()  # close(): what is in flight, or being submitted, is cancelled
        self.lock = threading.Lock()
        self.live: dict[int, Future] = {}

    def in_flight(self) -> int:
        with self.lock:
            return len(self.live)

    def cancel_live(self) -> None:
        self.closed.set()
        with self.lock:
            live = list(self.live.values())
        for future in live:
            future.cancel()

    def iterate(self, ordered: bool) -> Iterator[BatchResult]:
        waiting: dict[int, BatchResult] = {}
        next_index, handed, end = 0, 0, None
        try:
            while end is None or handed < end.count:
                got = self.results.get()
                if isinstance(got, _End):
                    end = got
                    continue
                if not ordered:
                    handed += 1
                    self.slots.release()
                    yield got
                    continue
                waiting[got.index] = got
                while next_index in waiting:
                    handed += 1
                    next_index += 1
                    self.slots.release()
                    yield waiting.pop(next_index - 1)
            if end.failure is not None:
                raise end.failure
        finally:
            self.stopping.set()

    def feed(self, items: Iterator[Any]) -> None:
        count, failure = 0, None
        try:
            while not self.stopping.is_set():
                if not self.slots.acquire(timeout=0.05):
                    continue
                if self.stopping.is_set():  # stop() came while it waited for the slot
                    break
                try:
                    raw = next(items)
                except StopIteration:
                    break
                self.submit(count, raw)
                count += 1
        except BaseException as exc:  # the input itself failed: raised after the results of the items before it
            failure = exc
        self.results.put(_End(count, failure))

    def submit(self, index: int, raw: Any) -> None:
        t0 = time.perf_counter()
        if isinstance(raw, FailedItem):
            self.results.put(BatchResult(index, raw.id, error=raw.error))
            return
        try:
            item = as_batch_item(raw)
        except C4UError as exc:
            self.results.put(BatchResult(index, None, error=exc))
            return
        try:
            future = self._submit_waiting(item)
        except C4UError as exc:
            self._put(index, item, t0, error=exc)
            return
        except TypeError as exc:  # e.g. an option Engine.select does not take
            self._put(index, item, t0, error=InvalidInputError(f"item {index}: {exc}"))
            return
        with self.lock:
            self.live[index] = future
        future.add_done_callback(lambda f: self._finished(index, item, f, t0))
        if self.closed.is_set():  # close() came while it was being submitted: cancel_live did not see it
            future.cancel()

    def _put(self, index: int, item: BatchItem, t0: float, **outcome: Any) -> None:
        self.results.put(BatchResult(index, item.id, seconds=time.perf_counter() - t0, images=item.images, **outcome))

    def _submit_waiting(self, item: BatchItem) -> Future:
        wait = OVERLOADED_RETRY_S[0]
        options = {**self.defaults, **item.options}
        while True:
            try:
                return self.engine.submit(item.images, item.profile, **options)
            except OverloadedError:
                if self.stopping.is_set():
                    raise
                time.sleep(wait)
                wait = min(2 * wait, OVERLOADED_RETRY_S[1])

    def _finished(self, index: int, item: BatchItem, future: Future, t0: float) -> None:
        with self.lock:
            self.live.pop(index, None)
        try:
            selection = future.result()
        except CancelledError:
            error: C4UError = RequestCancelledError(f"item {index} was cancelled")
        except C4UError as exc:
            error = exc
        except Exception as exc:  # a bug below us: still this item's failure only
            error = InferenceError(f"item {index}: {type(exc).__name__}: {exc}")
        else:
            self._put(index, item, t0, selection=selection)
            return
        self._put(index, item, t0, error=error)
