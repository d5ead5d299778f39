"""A lane's worker: the thread that owns its scheduler, the queue in front of it, admission, deadlines, cancellation,
generic calls between steps, recovery and shutdown. The step itself is the scheduler's (scheduler.py).

    admit    FIFO from a bounded queue, while the KV store has room (a request is always admitted when idle)
    reap     cancelled requests and those past their deadline leave, queued or live; their KV is released
    step     scheduler.step(): schedule -> run -> postprocess
    recover  a bug outside the guarded model calls fails every live request and starts over with an empty decode
             batch, instead of stopping the lane
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from c4u_engine.engine.request import Request
from c4u_engine.engine.scheduler import Scheduler
from c4u_engine.errors import DeadlineExceededError, OverloadedError, RequestCancelledError

IDLE_EXIT_S = 2.0  # the thread exits after this long without work (and starts again on the next request)
_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Join lane threads before the interpreter tears down the runtimes they call into."""
    for worker in list(_LIVE):
        worker.close()


class Worker:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.config = scheduler.config
        self._cond = threading.Condition()
        self._queue: deque[Request] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0
        _LIVE.add(self)

    # -- the callers' side --------------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue a request (FIFO); OverloadedError when max_queued_requests are already waiting."""
        with self._cond:
            if self._closed:
                raise RequestCancelledError("the engine is closed")
            if len(self._queue) >= self.config.max_queued_requests:  # cancelled ones do not count
                self._queue = deque(r for r in self._queue if not r.abandoned)
            if len(self._queue) >= self.config.max_queued_requests:
                raise OverloadedError(f"{len(self._queue)} requests are already queued (max_queued_requests="
                                      f"{self.config.max_queued_requests}); retry later")
            request.enqueued = time.perf_counter()
            self._queue.append(request)
            self._wake()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the lane's thread between steps (it owns the runner's KV and the store) and return its result."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RequestCancelledError("the engine is closed")
            self._calls.append((fn, fut))
            self._wake()
        return fut.result()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def active_requests(self) -> int:
        return len(self.scheduler.active)

    @property
    def load(self) -> int:
        """Requests waiting or live here."""
        return self.queue_depth + self.active_requests

    def close(self) -> None:
        """Stop: queued and live requests fail with RequestCancelledError; the thread exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def _wake(self) -> None:  # holding self._cond
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="c4u-lane", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # -- the loop -----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        active = self.scheduler.active
        while True:
            with self._cond:
                while not (self._queue or self._calls or active or self._closed):
                    if not self._cond.wait(timeout=IDLE_EXIT_S) and not (self._queue or self._calls or active):
                        self._thread = None
                        return
                if self._closed:
                    self._shutdown()
                    return
                calls, self._calls = list(self._calls), deque()
            for fn, fut in calls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
            if self._queue or active:
                try:
                    self.steps += 1
                    now = time.monotonic()
                    self._admit(now)
                    self._reap(now)
                    self.scheduler.step()
                except Exception as exc:  # noqa: BLE001 - a bug outside the guarded calls must not stop the lane
                    self.scheduler.recover(exc)

    def _admit(self, now: float) -> None:
        store, active = self.scheduler.store, self.scheduler.active
        reserved = 0
        with self._cond:
            while self._queue and len(active) < self.config.max_active_requests:
                r = self._queue[0]
                if r.abandoned or r.expired(now):
                    self._queue.popleft()
                    self._drop_or_expire(r)
                    continue
                need = store.bytes_per_slot * r.kv_slots_estimate
                if active and store.pinned_bytes + reserved + need > store.capacity:
                    break  # the KV budget is held by live requests: admit less, never fail
                self._queue.popleft()
                active.append(r)
                r.timer.seconds["queued"] = time.perf_counter() - r.enqueued
                reserved += need

    def _reap(self, now: float) -> None:
        for r in list(self.scheduler.active):
            if r.abandoned or r.expired(now):
                self._drop_or_expire(r)
        with self._cond:  # waiting ones too: a deadline holds while the engine is full
            gone = [r for r in self._queue if r.abandoned or r.expired(now)]
            for r in gone:
                self._queue.remove(r)
        for r in gone:
            self._drop_or_expire(r)

    def _drop_or_expire(self, r: Request) -> None:
        if r.abandoned:
            self.scheduler.release(r)
        else:
            self.scheduler.fail(r, DeadlineExceededError(
                f"request {r.id} did not finish within its timeout (after {time.perf_counter() - r.submitted:.3f} s)"))

    def _shutdown(self) -> None:  # holding self._cond
        err = RequestCancelledError("the engine was closed before the request finished")
        for r in list(self.scheduler.active) + list(self._queue):
            self.scheduler.fail(r, err)
        self._queue.clear()
        for _, fut in self._calls:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(err)
        self._calls.clear()
        self._thread = None
