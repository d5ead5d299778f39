"""The scheduler under load: a bounded queue, deadlines, cancellation, failures confined to their requests,
no starvation, and a clean close. A gate on the scheduler's thread holds it still while the test arranges a queue."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.errors import (C4UError, DeadlineExceededError, InferenceError, InvalidInputError, OverloadedError,
                               RequestCancelledError)

PROFILE = {"title": "Trail running shoes", "queries": ["running sale"]}


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(5)] + [make_test_image(84, 28, seed=9)]


@pytest.fixture(scope="module")
def reference(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch", prefix_cache_bytes=0, encoder_cache_bytes=0)
    ref = eng.select(images[:4], PROFILE, use_cache=False)
    eng.close()
    return ref


class Gate:
    """Blocks the scheduler thread (a call between steps) until opened."""

    def __init__(self, engine: Engine) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=engine.core.call, args=(self._hold,))
        self._thread.start()
        assert self.entered.wait(30)

    def _hold(self) -> None:
        self.entered.set()
        self.released.wait(60)

    def open(self) -> None:
        self.released.set()
        self._thread.join(30)


def slow_forward(engine: Engine, seconds: float):
    """Make every decoder call take at least `seconds` (so a request is still running when the test acts)."""
    original = engine.runner.forward

    def forward(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    engine.runner.forward = forward
    return lambda: setattr(engine.runner, "forward", original)


def _same(a, b) -> bool:
    return a.ranking == b.ranking and all(abs(x.prob_a - y.prob_a) < 1e-5 for x, y in zip(a.comparisons, b.comparisons))


def test_a_full_queue_refuses_with_overloaded_and_the_engine_goes_on(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch", max_queued_requests=2)
    gate = Gate(eng)
    queued = [eng.submit(images[:4], PROFILE) for _ in range(2)]
    with pytest.raises(OverloadedError, match="max_queued_requests=2"):
        eng.submit(images[:4], PROFILE)
    assert eng.load_stats()["queue_depth"] == 2
    gate.open()
    for f in queued:
        assert _same(f.result(60), reference)
    assert _same(eng.select(images[:4], PROFILE), reference)
    eng.close()


def test_a_missed_deadline_fails_only_that_request_and_releases_its_kv(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch")
    gate = Gate(eng)
    late = eng.submit(images[:4], PROFILE, timeout=0.05)
    patient = eng.submit(images[:4], PROFILE)
    time.sleep(0.2)
    gate.open()
    with pytest.raises(DeadlineExceededError, match="timeout"):
        late.result(60)
    assert _same(patient.result(60), reference)
    assert eng.load_stats()["prefix_cache_pinned_bytes"] == 0
    with pytest.raises(InvalidInputError, match="timeout"):
        eng.submit(images[:2], PROFILE, timeout=-1)
    eng.close()


def test_a_deadline_during_decoding_drops_the_rows(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch")
    executor = eng.core.lanes[0].worker.scheduler.executor
    decoding = []  # rows in the decode batch at each decode pass
    original_step = executor.decode.step
    executor.decode.step = lambda: (decoding.append(len(executor.decode)), original_step())[1]
    restore = slow_forward(eng, 0.1)  # prefix, [prefix + A], comparisons: 0.3 s, then decoding
    slow = eng.submit(images[:4], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=200, timeout=0.45)
    with pytest.raises(DeadlineExceededError):
        slow.result(60)
    assert decoding and max(decoding) == 12  # the deadline struck while all 12 rows were decoding
    assert len(executor.decode) == 0  # and they left the decode batch with the request
    restore()
    fine = eng.select(images[:3], PROFILE, mode="reason", max_new_tokens=4)
    assert len(fine.comparisons) == 4 and eng.load_stats()["prefix_cache_pinned_bytes"] == 0
    eng.close()


def test_cancelled_requests_free_their_kv_and_others_finish(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch", max_active_requests=1)
    gate = Gate(eng)
    a, b, c = (eng.submit(images[:4], PROFILE, strategy=s) for s in ("knockout", "round_robin", "knockout"))
    assert b.cancel() and b.cancelled()
    gate.open()
    assert _same(a.result(60), reference) and _same(c.result(60), reference)
    # cancel one that is running: its decode rows and KV go away, the engine stays usable
    restore = slow_forward(eng, 0.1)
    running = eng.submit(images[:4], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=200)
    time.sleep(0.35)
    assert running.cancel()
    time.sleep(0.3)
    restore()
    assert _same(eng.select(images[:4], PROFILE), reference)
    stats = eng.load_stats()
    assert stats["prefix_cache_pinned_bytes"] == 0 and stats["active_requests"] == 0
    eng.close()


def test_asyncio_task_cancellation_cancels_the_request(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch")
    slow_forward(eng, 0.1)

    async def main():
        task = asyncio.ensure_future(eng.select_async(images[:4], PROFILE, mode="reason", strategy="round_robin",
                                                      max_new_tokens=200))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    deadline = time.monotonic() + 60  # the lane drops it at its next step boundary (a loaded machine steps slowly)
    while eng.load_stats()["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eng.load_stats()["active_requests"] == 0 and eng.load_stats()["prefix_cache_pinned_bytes"] == 0
    assert eng.load_stats()["steps"] < 19  # dropped mid-decoding: it did not run its 200 tokens to the end
    eng.close()


def test_a_failing_batch_fails_only_its_own_request(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch")
    runner = eng.runner
    original = runner.encode_images
    poison_grid = eng.core.session.grid_of(eng.core.session.load_images([images[5]])[0])

    def encode_images(pixel_values, grid_thw):
        if any(tuple(g) == poison_grid for g in np.asarray(grid_thw).tolist()):
            raise RuntimeError("simulated kernel failure")
        return original(pixel_values, grid_thw)

    runner.encode_images = encode_images
    gate = Gate(eng)  # both requests land in the same step, so their images share one vision call
    good = eng.submit(images[:4], PROFILE)
    bad = eng.submit([images[4], images[5]], PROFILE)
    gate.open()
    assert _same(good.result(60), reference)
    with pytest.raises(InferenceError, match="simulated kernel failure") as info:
        bad.result(60)
    assert isinstance(info.value, C4UError) and isinstance(info.value.__cause__, RuntimeError)
    runner.encode_images = original
    assert eng.load_stats()["prefix_cache_pinned_bytes"] == 0  # the failed request pinned nothing it kept
    assert _same(eng.select(images[:4], PROFILE), reference)
    eng.close()


def test_a_queued_request_expires_while_the_engine_is_full(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch", max_active_requests=1)
    gate = Gate(eng)
    first = eng.submit(images[:4], PROFILE)
    waiting = eng.submit(images[:4], PROFILE, timeout=0.05)
    time.sleep(0.15)
    gate.open()
    with pytest.raises(DeadlineExceededError):
        waiting.result(60)
    assert _same(first.result(60), reference)
    eng.close()


def test_cancelled_requests_do_not_hold_queue_places(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch", max_queued_requests=2)
    gate = Gate(eng)
    for f in [eng.submit(images[:4], PROFILE) for _ in range(2)]:
        assert f.cancel()
    kept = eng.submit(images[:4], PROFILE)  # the cancelled two no longer count
    gate.open()
    assert _same(kept.result(60), reference)
    eng.close()


def test_an_error_outside_the_batched_calls_fails_live_requests_and_the_engine_goes_on(tiny_ckpt, images,
                                                                                       reference):
    eng = Engine(tiny_ckpt, backend="torch")
    scheduler = eng.core.lanes[0].worker.scheduler
    original = scheduler.schedule
    calls = []

    def broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in scheduling")
        return original()

    scheduler.schedule = broken
    with pytest.raises(InferenceError, match="bug in scheduling"):
        eng.select(images[:4], PROFILE)
    assert _same(eng.select(images[:4], PROFILE), reference)
    assert eng.load_stats()["prefix_cache_pinned_bytes"] == 0
    eng.close()


def test_an_old_request_is_not_starved_by_a_stream_of_new_ones(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch", max_batch_rows=4)
    early = eng.submit(images[:5], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6)
    done_before_early = []
    stop = threading.Event()

    def stream():
        inflight = []
        while not stop.is_set():
            inflight.append(eng.submit(images[:4], {"title": f"shoes {len(inflight)}"}, strategy="round_robin"))
            if len(inflight) > 8:
                inflight.pop(0).result(60)
                if not early.done():
                    done_before_early.append(1)
        for f in inflight:
            f.result(60)

    t = threading.Thread(target=stream)
    t.start()
    sel = early.result(120)
    stop.set()
    t.join(120)
    assert len(sel.comparisons) == 20
    # FIFO: the stream's later requests cannot overtake it for long (each step serves the oldest rows first)
    assert len(done_before_early) < 30  # 104 when a step ran every waiting comparison before one decode step
    eng.close()


def test_close_fails_queued_requests_and_refuses_new_ones(tiny_ckpt, images):
    eng = Engine(tiny_ckpt, backend="torch")
    gate = Gate(eng)
    queued = eng.submit(images[:4], PROFILE)
    threading.Timer(0.2, gate.open).start()
    eng.close()
    with pytest.raises(RequestCancelledError):
        queued.result(30)
    with pytest.raises(RequestCancelledError, match="closed"):
        eng.submit(images[:2], PROFILE)


def test_generic_calls_run_between_steps_while_selects_are_live(tiny_ckpt, images, reference):
    eng = Engine(tiny_ckpt, backend="torch")
    futures = [eng.submit(images[:4], PROFILE) for _ in range(4)]
    messages, prefix = eng.comparison_messages(images[0], images[1], PROFILE)
    logits = eng.logits(messages, prefix)
    assert logits.shape == (eng.runner.vocab_size,)
    assert abs(eng.compare(images[0], images[1], PROFILE).prob_a
               - float(1 / (1 + np.exp(logits[eng.answer_token_ids[1]] - logits[eng.answer_token_ids[0]])))) < 1e-5
    for f in futures:
        assert _same(f.result(60), reference)
    eng.close()
