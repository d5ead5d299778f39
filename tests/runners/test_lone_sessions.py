"""A call that runs alone (the engine's lone check) gets the runner's lone sessions, on every core, or its lane's
one-thread ones where those measured faster for calls of its size (runners/lone_choice.py); calls while several
lanes have requests get the lanes' own one-thread sessions."""

from __future__ import annotations

import os
import shutil
import sys
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

sys.path.append(str(Path(__file__).resolve().parents[2]))  # `import export` (a repo-level package)
from export.onnx_export import export_engine  # noqa: E402

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes"]}


@pytest.fixture(scope="module")
def ckpt_with_export(tiny_ckpt, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("lone") / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    export_engine(ckpt, log=lambda message: None)
    return ckpt


class _Spy:
    def __init__(self, session, name: str, log: list) -> None:
        self._session, self._name, self._log = session, name, log

    def run(self, outputs, feeds):
        self._log.append(self._name)
        return self._session.run(outputs, feeds)


def _spied(runner) -> list[str]:
    log: list[str] = []
    runner._vision, runner._decoder = _Spy(runner._vision, "lane", log), _Spy(runner._decoder, "lane", log)
    runner._lone = (_Spy(runner._lone[0], "lone", log), _Spy(runner._lone[1], "lone", log))
    return log


def _prefill(runner):
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((2, 5, runner.hidden_size)).astype(np.float32)
    pos = np.broadcast_to(np.arange(5), (3, 2, 5)).copy()
    return runner.forward(embeds, pos, None, np.ones((2, 5), bool), np.full((2, 1), 4, np.int64))[0]


def test_runner_asks_the_lone_check_per_call_and_both_sessions_compute_the_same(ckpt_with_export):
    runner = OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=1, lone_threads=2)
    assert runner.lone_threads == 2 and runner.intra_op_threads == 1
    log = _spied(runner)
    lane = _prefill(runner)  # no check set: a runner outside an engine knows nothing of lanes
    alone = [True]
    runner.set_lone_check(lambda: alone[0])
    lone = _prefill(runner)
    alone[0] = False
    shared = _prefill(runner)
    assert log == ["lane", "lone", "lane"]
    np.testing.assert_allclose(lone, lane, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(shared, lane)


def test_no_lone_sessions_when_they_would_not_add_threads(ckpt_with_export, monkeypatch):
    assert OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=2, lone_threads=2).lone_threads is None
    assert OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=None, lone_threads=2).lone_threads is None
    monkeypatch.setenv("C4U_ORT_THREADS", "1")  # the user's explicit setting wins for every call
    assert OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=1, lone_threads=2).lone_threads is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="lanes are one per core: needs 2 cores")
def test_default_engine_runs_a_lone_request_on_every_core_and_concurrent_ones_on_the_lanes(ckpt_with_export):
    cores = len(os.sched_getaffinity(0))
    chosen = Engine(ckpt_with_export, backend="onnxruntime", lanes=2)
    assert chosen.config.lanes == 2 and chosen.runner.lone_threads is None
    chosen.close()
    engine = Engine(ckpt_with_export, backend="onnxruntime")
    try:
        assert engine.config.lanes > 1 and engine.runner.lone_threads == cores
        log = _spied(engine.runner)
        images = [make_test_image(56, 56, seed=s) for s in range(3)]
        alone = engine.select(images, PROFILE, use_cache=False)
        # one request: one lane has work, so every call is timed on one of the two session sets per its size
        timed = engine.runner.lone_choice.timings()
        assert log and log[0] == "lone" and len(log) == sum(len(a) + len(b) for a, b in timed.values())
        lanes = engine.core.lanes
        try:  # the check counts the lanes that have requests (waiting or live)
            for loads, expected in (([0, 0], True), ([3, 0], True), ([0, 1], True), ([1, 1], False)):
                engine.core.lanes = [SimpleNamespace(load=n) for n in loads]
                assert engine.runner._lone_check() is expected, loads
        finally:
            engine.core.lanes = lanes
        log.clear()
        assert [r.selection.ranking for r in engine.select_many([(images, PROFILE)] * 4, use_cache=False)] == \
            [alone.ranking] * 4
    finally:
        engine.close()


class _Slow(_Spy):
    def __init__(self, session, name: str, log: list, seconds: float) -> None:
        super().__init__(session, name, log)
        self._seconds = seconds

    def run(self, outputs, feeds):
        import time

        time.sleep(self._seconds)
        return super().run(outputs, feeds)


@pytest.mark.parametrize("slow", ["lone", "lane"])
def test_a_short_lone_call_runs_where_calls_of_its_size_ran_faster(ckpt_with_export, slow):
    """Short calls: two timed calls on every core, two on one thread, then the faster set, the slower one timed
    again once in RECHECK_EVERY calls; the numbers do not depend on the set."""
    from c4u_engine.runners.lone_choice import RECHECK_EVERY, TRIALS

    runner = OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=1, lone_threads=2)
    runner.set_lone_check(lambda: True)
    log: list[str] = []
    delay = {"lone": 0.0, "lane": 0.0, slow: 0.005}
    runner._decoder = _Slow(runner._decoder, "lane", log, delay["lane"])
    runner._lone = (runner._lone[0], _Slow(runner._lone[1], "lone", log, delay["lone"]))
    first = _prefill(runner)
    for _ in range(2 * TRIALS - 1 + RECHECK_EVERY):
        np.testing.assert_allclose(_prefill(runner), first, rtol=1e-5, atol=1e-5)
    fast = "lane" if slow == "lone" else "lone"
    assert log[: 2 * TRIALS] == ["lone"] * TRIALS + ["lane"] * TRIALS
    chosen = log[2 * TRIALS:]
    assert chosen.count(slow) == 1 and chosen.count(fast) == RECHECK_EVERY - 1, chosen


def test_a_long_lone_call_keeps_every_core_untried_on_one_thread(ckpt_with_export):
    from c4u_engine.runners.lone_choice import EXPLORE_BELOW_S

    runner = OnnxRuntimeRunner(ckpt_with_export / "onnx", intra_op_threads=1, lone_threads=2)
    runner.set_lone_check(lambda: True)
    log: list[str] = []
    runner._decoder = _Spy(runner._decoder, "lane", log)
    runner._lone = (runner._lone[0], _Slow(runner._lone[1], "lone", log, EXPLORE_BELOW_S))
    for _ in range(6):
        _prefill(runner)
    assert log == ["lone"] * 6


def test_lone_choice_compares_time_per_unit_of_work():
    from c4u_engine.runners.lone_choice import LoneChoice, call_work

    assert call_work(1, {"inputs_embeds": np.zeros((4, 16, 8))}) == 64
    assert call_work(0, {"pixel_patches": np.zeros((256, 8))}) == 256
    choice = LoneChoice()
    for _ in range(2):
        choice.record((1, 7), True, 0.004, 64)  # every core: 62.5 us per token
        choice.record((1, 7), False, 0.005, 120)  # one thread on larger calls of the size: 41.7 us per token
        choice.record((1, 9), True, 0.002, 300)
        choice.record((1, 9), False, 0.006, 300)
    assert choice.use_lone((1, 7)) is False and choice.use_lone((1, 9)) is True
    assert choice.use_lone((0, 3)) is True  # a size never timed starts with the all-core sessions
