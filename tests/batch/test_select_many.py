"""Engine.select_many / SelectionStream: the same selections as a loop of select(), failures in their place, a
bounded window over a lazily pulled input, retries on a full queue, and cancellation on close/break.

The window and cancellation tests run the stream over a fake engine whose futures the test resolves by hand."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from concurrent.futures import Future

import pytest

from c4u_engine.api import Engine
from c4u_engine.batch import BatchItem, BatchResult, FailedItem, SelectionStream
from c4u_engine.builtin import builtin_model_dir
from c4u_engine.errors import (InferenceError, InvalidImageError, InvalidInputError, OverloadedError, ProfileError,
                               RequestCancelledError)

WAIT_S = 30.0  # generous: the box may be loaded; nothing here is timed


def wait_until(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def drain(stream, limit: int | None = None, timeout: float = WAIT_S) -> list[BatchResult]:
    """list(stream) (or its first `limit` results), failing instead of hanging when the stream stalls; what the
    stream raises is re-raised here."""
    box: dict = {}

    def run() -> None:
        try:
            box["results"] = list(itertools.islice(stream, limit))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        stream.close()
        raise AssertionError(f"the stream stalled: no end within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["results"]


def settle() -> None:
    """Give the feeder thread a moment to do what it should not (over-submit, over-pull)."""
    time.sleep(0.2)


class FakeEngine:
    """Anything with .submit(images, profile, **options) -> Future: records each call, resolves nothing by itself
    (unless `auto_resolve` is given: the first that many submissions come back resolved), and raises
    OverloadedError for the first `overloaded` calls."""

    def __init__(self, *, auto_resolve: int = 0, overloaded: int = 0) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple] = []  # every submit call, refused ones included
        self.futures: list[Future] = []  # the accepted submissions, in order
        self.auto_resolve, self.overloaded = auto_resolve, overloaded

    def submit(self, images, profile, **options) -> Future:
        with self.lock:
            self.calls.append((images, profile, options))
            if self.overloaded:
                self.overloaded -= 1
                raise OverloadedError("queue full")
            future: Future = Future()
            self.futures.append(future)
            if len(self.futures) <= self.auto_resolve:
                future.set_result(("selected", images))
            return future

    @property
    def submitted(self) -> int:
        with self.lock:
            return len(self.futures)

    def resolve(self, i: int) -> None:
        self.futures[i].set_result(("selected", i))


def endless(pulled: list[int]):
    """An infinite input that records how far it was pulled."""
    for i in itertools.count():
        pulled.append(i)
        yield ([f"img{i}.png"], "a profile")


def feeder_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "c4u-select-many" and t.is_alive()}


def wait_for_feeders_to_end(before: set[threading.Thread]) -> None:
    wait_until(lambda: not (feeder_threads() - before), "the stream's feeder thread to end")


# -- against the real engine ---------------------------------------------------------------------------

@pytest.mark.parametrize("ordered", [True, False])
def test_results_equal_a_loop_of_select(engine, made_groups, same_selection, ordered):
    groups = made_groups(8).groups
    defaults = {} if ordered else {"strategy": "round_robin"}
    # every item shape: (images, profile), (images, profile, options), a dict with an id, a BatchItem
    items, options = [], []
    for i, g in enumerate(groups):
        own = {"strategy": "knockout"} if i == 5 else {}  # an item's own options win over the defaults
        options.append({**defaults, **own})
        items.append([(g.images, g.profile), (g.images, g.profile, own), {"images": g.images, "profile": g.profile,
                      "options": own, "id": g.id}, BatchItem(g.images, g.profile, own, g.id)][i % 4])
    want = [engine.select(g.images, g.profile, **o) for g, o in zip(groups, options)]
    results = drain(engine.select_many(items, ordered=ordered, max_in_flight=3, **defaults))
    if ordered:
        assert [r.index for r in results] == list(range(len(groups)))
    results.sort(key=lambda r: r.index)
    assert [r.index for r in results] == list(range(len(groups)))
    for i, (r, w, g) in enumerate(zip(results, want, groups)):
        assert r.ok and r.error is None, r.error
        assert r.id == (g.id if i % 4 >= 2 else None)
        assert r.images == g.images
        same_selection(r.selection, w)
    for r, o in zip(results, options):  # the defaults reached the engine: round robin plays N(N-1) comparisons
        n = len(r.images) - len(r.selection.duplicates) - len(r.selection.rejected)  # the distinct candidates
        played = len(r.selection.comparisons)
        assert played == (n * (n - 1) if o.get("strategy") == "round_robin" else 2 * (n - 1)), (o, r.selection)


def test_failures_stay_in_place_and_the_others_succeed(engine, made_groups, same_selection):
    g = made_groups(8).groups
    missing = [*g[1].images[:3], g[1].images[3] + ".missing.png"]
    items = [
        (g[0].images, g[0].profile),
        {"images": missing, "profile": g[1].profile, "options": {"strict": True}, "id": "missing"},
        (g[2].images, g[2].profile),
        {"images": g[3].images, "profile": {"title": 5}, "id": "bad-profile"},
        [g[4].images, g[4].profile],  # a list is not an item
        {"images": g[5].images, "profile": g[5].profile, "options": {"colour": "red"}, "id": "unknown-option"},
        FailedItem("line-7", InvalidInputError("line 7 was not JSON")),
        {"images": g[6].images, "profile": g[6].profile, "colour": "red"},  # an unknown key of the item itself
        BatchItem(g[7].images, g[7].profile, {}, "last"),
    ]
    results = drain(engine.select_many(items, max_in_flight=4))
    assert [r.index for r in results] == list(range(len(items)))
    by_index = {r.index: r for r in results}
    for i, k in ((0, 0), (2, 2), (8, 7)):
        assert by_index[i].ok, by_index[i].error
        same_selection(by_index[i].selection, engine.select(g[k].images, g[k].profile))
    assert by_index[8].id == "last"
    expected = {1: ("missing", InvalidImageError, "missing.png"), 3: ("bad-profile", ProfileError, "title"),
                4: (None, InvalidInputError, "list"), 5: ("unknown-option", InvalidInputError, "colour"),
                6: ("line-7", InvalidInputError, "line 7 was not JSON"), 7: (None, InvalidInputError, "colour")}
    for i, (ident, error_type, text) in expected.items():
        r = by_index[i]
        assert not r.ok and r.selection is None
        assert r.id == ident
        assert isinstance(r.error, error_type), r.error
        assert text in str(r.error)
    # without strict the missing file is only a rejected candidate
    lenient = drain(engine.select_many([(missing, g[1].profile)]))
    assert lenient[0].ok and 3 in lenient[0].selection.rejected and 3 not in lenient[0].selection.ranking


def test_unknown_or_invalid_default_options_raise_before_pulling_the_input(engine):
    pulled: list[int] = []
    with pytest.raises(InvalidInputError, match="colour"):
        engine.select_many(endless(pulled), colour="red")
    with pytest.raises(InvalidInputError, match="mode"):
        engine.select_many(endless(pulled), mode="slow")
    with pytest.raises(InvalidInputError, match="strategy"):
        engine.select_many(endless(pulled), strategy="swiss")
    with pytest.raises(InvalidInputError, match="max_in_flight"):
        engine.select_many(endless(pulled), max_in_flight=0)
    settle()
    assert pulled == []


def test_default_window_follows_the_engine_config():
    with Engine(builtin_model_dir(), lanes=1, max_active_requests=3) as small:
        assert small.default_in_flight == 3
        stream = small.select_many([])
        assert stream.max_in_flight == 3
        assert drain(stream) == []
    with Engine(builtin_model_dir(), lanes=2, max_active_requests=64) as wide:
        assert wide.default_in_flight == 2 * 16  # SELECT_MANY_PER_LANE caps each lane's share


def test_an_input_that_raises_ends_the_stream_after_the_items_before_it(engine, made_groups, same_selection):
    groups = made_groups(8).groups

    def items():
        for g in groups[:3]:
            yield (g.images, g.profile)
        raise KeyError("the catalogue broke")

    stream = engine.select_many(items(), max_in_flight=2)
    got = drain(stream, 3)
    assert [r.index for r in got] == [0, 1, 2]
    with pytest.raises(KeyError, match="the catalogue broke"):
        drain(stream)
    for r, g in zip(got, groups):
        same_selection(r.selection, engine.select(g.images, g.profile))


def test_select_many_async_yields_the_same_results(engine, made_groups, same_selection):
    groups = made_groups(8).groups[:3]
    want = [engine.select(g.images, g.profile, mode="hybrid") for g in groups]

    async def collect():
        return [r async for r in engine.select_many_async([(g.images, g.profile) for g in groups], mode="hybrid",
                                                          max_in_flight=2)]

    results = asyncio.run(collect())
    assert [r.index for r in results] == list(range(len(groups)))
    for r, w in zip(results, want):
        same_selection(r.selection, w)
        assert r.selection.stats["mode"] == "hybrid"


# -- the window, laziness and cancellation, over a fake engine ------------------------------------------

def test_window_bounds_submitted_and_not_yet_yielded_and_pulls_lazily():
    fake, pulled, window = FakeEngine(), [], 3
    stream = SelectionStream(fake, endless(pulled), max_in_flight=window, ordered=True)
    try:
        wait_until(lambda: fake.submitted == window, "the first window")
        settle()
        assert fake.submitted == window and len(pulled) == window  # nothing pulled beyond what was submitted
        assert stream.in_flight == window
        # finished but not yet handed out still counts: item 1 done, item 0 not, so nothing new goes in
        fake.resolve(1)
        settle()
        assert fake.submitted == window and len(pulled) == window
        yielded = 0
        order = [0, 2, 4, 3, 6, 5, 7, 8, 9, 10]
        resolved = {1}
        for i in order:
            if i not in resolved:
                wait_until(lambda: fake.submitted > i, f"item {i} submitted")
                fake.resolve(i)
                resolved.add(i)
            # hand out whatever is ready in order, checking the window after each
            while yielded in resolved:
                [r] = drain(stream, 1)
                assert r.index == yielded and r.selection == ("selected", yielded)
                yielded += 1
                wait_until(lambda: fake.submitted == yielded + window, "the window refilled")
                settle()
                assert fake.submitted == yielded + window, "more than max_in_flight submitted and not yielded"
                assert len(pulled) == fake.submitted
        assert yielded == 11
    finally:
        stream.close()
    assert all(f.cancelled() for f in fake.futures[11:])


def test_break_cancels_the_live_futures_and_stops_the_feeder():
    before = feeder_threads()
    fake, pulled = FakeEngine(auto_resolve=3), []
    got = []
    for r in SelectionStream(fake, endless(pulled), max_in_flight=4, ordered=False):
        got.append(r)
        if len(got) == 3:
            wait_until(lambda: fake.submitted == 7, "the window refilled")  # 3 handed out + 4 in flight
            break
    assert sorted(r.index for r in got) == [0, 1, 2]
    live = fake.futures[3:]
    assert len(live) == 4 and all(f.cancelled() for f in live)
    wait_for_feeders_to_end(before)
    settle()
    assert fake.submitted == 7 and len(pulled) == 7


def test_close_cancels_in_flight_futures_and_ends_the_iteration():
    before = feeder_threads()
    fake, pulled = FakeEngine(), []
    stream = SelectionStream(fake, endless(pulled), max_in_flight=3)
    wait_until(lambda: fake.submitted == 3, "the first window")
    stream.close()
    assert [f.cancelled() for f in fake.futures] == [True, True, True]
    assert drain(stream) == []  # no results for what was cancelled
    wait_for_feeders_to_end(before)
    assert fake.submitted == 3 and len(pulled) == 3


def test_close_while_an_item_is_being_submitted_cancels_it_too():
    entered, gate = threading.Event(), threading.Event()

    class SlowSubmit(FakeEngine):
        def submit(self, images, profile, **options):
            if self.submitted == 1:  # the second item: close() comes while it is being submitted
                entered.set()
                gate.wait(WAIT_S)
            return super().submit(images, profile, **options)

    fake = SlowSubmit()
    stream = SelectionStream(fake, endless([]), max_in_flight=3)
    assert entered.wait(WAIT_S)
    stream.close()
    gate.set()
    wait_until(lambda: fake.submitted == 2, "the second submission")
    wait_until(lambda: fake.futures[1].cancelled(), "the item submitted during close() to be cancelled", 5.0)
    assert fake.futures[0].cancelled()
    settle()
    assert fake.submitted == 2


def test_stop_takes_no_new_items_but_the_ones_in_flight_come_out():
    fake, pulled = FakeEngine(), []
    stream = SelectionStream(fake, endless(pulled), max_in_flight=3)
    wait_until(lambda: fake.submitted == 3, "the first window")
    stream.stop()
    for i in (2, 0, 1):  # at once: each result handed out frees a slot the feeder must not use any more
        fake.resolve(i)
    assert [(r.index, r.selection) for r in drain(stream, 3)] == [(i, ("selected", i)) for i in range(3)]
    settle()
    assert fake.submitted == 3 and len(pulled) == 3, "an item was taken after stop()"
    assert drain(stream) == []


def test_a_full_queue_is_waited_out_not_reported():
    fake = FakeEngine(auto_resolve=5, overloaded=2)
    items = [([f"img{i}.png"], "a profile", {"mode": "reason"}) for i in range(2)]
    results = drain(SelectionStream(fake, items, max_in_flight=1, defaults={"strategy": "round_robin"}))
    assert [(r.index, r.ok) for r in results] == [(0, True), (1, True)]
    assert [r.selection for r in results] == [("selected", ["img0.png"]), ("selected", ["img1.png"])]
    assert len(fake.calls) == 4  # item 0 refused twice, then taken; item 1 taken at once
    assert all(c[2] == {"strategy": "round_robin", "mode": "reason"} for c in fake.calls)


def test_a_full_queue_when_stopping_is_the_items_error():
    fake = FakeEngine(overloaded=10**9)
    stream = SelectionStream(fake, [(["a.png"], "p"), (["b.png"], "p")], max_in_flight=1)
    wait_until(lambda: len(fake.calls) >= 2, "a retry")
    stream.stop()
    results = drain(stream)
    assert len(results) == 1 and isinstance(results[0].error, OverloadedError)


def test_failures_below_the_engine_are_the_items_own():
    fake = FakeEngine()
    stream = SelectionStream(fake, [(["a.png"], "p"), (["b.png"], "p"), (["c.png"], "p")], max_in_flight=3)
    wait_until(lambda: fake.submitted == 3, "all submitted")
    fake.futures[0].set_exception(RuntimeError("a bug below"))
    fake.futures[1].cancel()
    fake.resolve(2)
    results = drain(stream)
    assert [r.index for r in results] == [0, 1, 2]
    assert isinstance(results[0].error, InferenceError) and "a bug below" in str(results[0].error)
    assert isinstance(results[1].error, RequestCancelledError)
    assert results[2].ok and results[2].selection == ("selected", 2)


def test_tiny_cache_budgets_and_re_packed_reasoning_rows_give_the_loops_results(engine, made_groups, same_selection,
                                                                               monkeypatch):
    # Reasoning rows of several requests decoding together, their batch re-packed whenever a row carries padding
    # (rows join a running batch: engine/decode_batch.py), and an engine that keeps no KV or embedding beyond the
    # requests using them: the same selections as the shared engine's loop.
    from c4u_engine.engine import decode_batch

    groups = made_groups(6, seed=3).groups
    want = [engine.select(g.images, g.profile, mode="reason") for g in groups]
    monkeypatch.setattr(decode_batch, "COMPACT_MIN_SLOTS", 0)
    monkeypatch.setattr(decode_batch, "COMPACT_SLACK", 1.0)
    repacks = []
    compact = decode_batch.DecodeBatch._compact

    def counted(self, batch):
        before = self.compactions
        compact(self, batch)
        repacks.append(self.compactions - before)

    monkeypatch.setattr(decode_batch.DecodeBatch, "_compact", counted)
    for settings in ({}, {"prefix_cache_bytes": 0, "encoder_cache_bytes": 0}):
        with Engine(builtin_model_dir(), **settings) as other:
            results = drain(other.select_many([(g.images, g.profile) for g in groups], mode="reason",
                                              max_in_flight=6))
        for r, w in zip(results, want):
            assert r.ok, r.error
            same_selection(r.selection, w)
    assert sum(repacks) > 0
