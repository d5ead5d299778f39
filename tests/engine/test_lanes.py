"""Lanes (EngineConfig.lanes): several schedulers on one loaded model. Results equal one scheduler's, requests
spread over the lanes, the KV budget is split, and the limits (deadlines, cancellation, close) hold in every lane."""

from __future__ import annotations


import numpy as np
import pytest

import concurrent_clients
from concurrent_clients import same
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.engine.config import EngineConfig
from c4u_engine.runners.base import RunnerCapabilities
from c4u_engine.engine.lanes import Lane, lane_threads, pick_lane, planned_lanes, resolve_lanes
from c4u_engine.errors import DeadlineExceededError, InvalidInputError, RequestCancelledError

MAX_NEW = 6


@pytest.fixture(scope="module")
def builtin():
    from c4u_engine.builtin import builtin_model_dir

    return builtin_model_dir()  # onnxruntime: the runtime whose calls run side by side


@pytest.fixture(scope="module")
def requests():
    pool = [make_test_image(112, 112, seed=s) for s in range(7)] + [make_test_image(140, 84, seed=9)]
    out = []
    for k in range(12):
        idx = [(k + j * 3) % len(pool) for j in range(3 + k % 2)]
        profile = {"title": f"Trail running shoes model {k % 5}", "queries": ["running sale", f"size {k % 4}"]}
        out.append(([pool[i] for i in dict.fromkeys(idx)], profile))
    return out


def run_clients(engine, reqs, clients: int, **options) -> list:
    return concurrent_clients.run_clients(engine, reqs, clients, max_new_tokens=MAX_NEW, **options)


@pytest.mark.parametrize("mode,strategy", [("fast", "knockout"), ("fast", "round_robin"), ("reason", "knockout"),
                                           ("hybrid", "knockout")])
def test_two_lanes_under_concurrent_clients_give_one_schedulers_results(builtin, requests, mode, strategy):
    one = Engine(builtin, lanes=1, prefix_cache_bytes=0, encoder_cache_bytes=0)
    alone = [one.select(im, p, mode=mode, strategy=strategy, max_new_tokens=MAX_NEW, use_cache=False)
             for im, p in requests]
    one.close()
    two = Engine(builtin, lanes=2)
    got = run_clients(two, requests, 6, mode=mode, strategy=strategy)
    for k, (g, ref) in enumerate(zip(got, alone)):
        assert same(g, ref), f"request {k}"
    stats = two.load_stats()
    assert len(stats["lanes"]) == 2 and all(lane["steps"] > 0 for lane in stats["lanes"]), stats["lanes"]
    assert stats["steps"] == sum(lane["steps"] for lane in stats["lanes"]) and stats["active_requests"] == 0
    assert stats["prefix_cache_pinned_bytes"] == 0
    again = run_clients(two, requests[:4], 4, mode=mode, strategy=strategy)  # warm: cached KV and embeddings
    assert all(same(g, ref) for g, ref in zip(again, alone[:4]))
    two.close()


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: n)


def test_lanes_split_the_kv_budget_and_use_one_thread_each(builtin, monkeypatch):
    monkeypatch.delenv("C4U_ORT_THREADS", raising=False)
    _cores(monkeypatch, 4)
    assert lane_threads(1) is None and lane_threads(2) == 2 and lane_threads(4) == 1 and lane_threads(8) == 1
    monkeypatch.setenv("C4U_ORT_THREADS", "3")
    assert lane_threads(2) == 2
    eng = Engine(builtin, lanes=2, prefix_cache_bytes=1001)
    assert eng.runner.capabilities.intra_op_threads == 3  # the user's explicit setting wins over the plan
    assert [lane.store.capacity for lane in eng.core.lanes] == [500, 500]
    eng.close()


def test_by_default_onnxruntime_on_a_cpu_gets_a_lane_per_core_and_the_rest_one(builtin, tiny_ckpt, monkeypatch):
    monkeypatch.delenv("C4U_ORT_THREADS", raising=False)
    for cores, want in ((1, 1), (2, 2), (3, 3), (16, 4)):
        _cores(monkeypatch, cores)
        assert planned_lanes(None, "cpu") == want and planned_lanes(None, "cuda:0") == 1
        assert planned_lanes(5, "cuda") == 5
    _cores(monkeypatch, 2)
    eng = Engine(builtin)
    assert eng.config.lanes == 2 and len(eng.core.lanes) == 2 and eng.runner._options.intra_op_num_threads == 1
    assert Engine(builtin, lanes=1).config.lanes == 1
    torch_engine = Engine(tiny_ckpt, backend="torch")
    assert torch_engine.config.lanes == 1 and len(torch_engine.core.lanes) == 1
    # a runner built elsewhere keeps one lane unless asked: its threads were not chosen for lanes
    assert Engine(builtin, runner=eng.runner).config.lanes == 1
    for e in (eng, torch_engine):
        e.close()


def test_lanes_are_refused_where_the_runner_serializes_its_calls(tiny_ckpt):
    with pytest.raises(InvalidInputError, match="the torch runner serializes"):
        Engine(tiny_ckpt, backend="torch", lanes=2)
    Engine(tiny_ckpt, backend="torch", lanes=1).close()


@pytest.mark.parametrize("bad", [0, -1, "2", 2.0, True, 65])
def test_lanes_setting_is_validated(bad):
    with pytest.raises(InvalidInputError, match="lanes"):
        EngineConfig(lanes=bad)


class _Worker:
    def __init__(self, queued: int, active: int) -> None:
        self.load = queued + active


def test_a_request_goes_to_the_least_loaded_lane_and_ties_follow_its_prefix():
    lanes = [Lane(_Worker(q, a), None) for q, a in [(1, 2), (0, 1), (0, 3)]]
    assert pick_lane(lanes, affinity=0) is lanes[1]
    idle = [Lane(_Worker(0, 0), None) for _ in range(3)]
    assert [idle.index(pick_lane(idle, affinity=a)) for a in range(6)] == [0, 1, 2, 0, 1, 2]


def test_resolve_lanes_names_the_runner_that_serializes():
    class Serial:
        name, device = "tensorrt", "cuda"
        capabilities = RunnerCapabilities(concurrent_calls=False, paged_kv=False, paged_decode_rows=False,
                                          kernel_device=None, device_pixels=False, intra_op_threads=None)

    assert resolve_lanes(1, 4, Serial(), built_here=True) == 1 and resolve_lanes(None, 4, Serial(), True) == 1
    with pytest.raises(InvalidInputError, match="tensorrt"):
        resolve_lanes(3, 3, Serial(), built_here=True)


def test_deadlines_cancellation_and_close_hold_in_every_lane(builtin, requests):
    eng = Engine(builtin, lanes=2)
    original = eng.runner.forward

    def slow(*args, **kwargs):  # every decoder call takes a while, so requests are still live when the test acts
        import time

        time.sleep(0.05)
        return original(*args, **kwargs)

    eng.runner.forward = slow
    late = [eng.submit(im, p, mode="reason", max_new_tokens=40, timeout=0.2) for im, p in requests[:4]]
    cancelled = [eng.submit(im, p, mode="reason", max_new_tokens=40) for im, p in requests[4:8]]
    for f in cancelled:
        f.cancel()
    for f in late:
        with pytest.raises(DeadlineExceededError):
            f.result(timeout=60)
    eng.runner.forward = original
    ok = eng.select(*requests[8])
    assert ok.ranking
    stats = eng.load_stats()
    assert stats["prefix_cache_pinned_bytes"] == 0 and stats["active_requests"] == 0
    eng.close()
    with pytest.raises(RequestCancelledError):
        eng.select(*requests[9])
    assert all(np.isfinite(c.prob_a) for c in ok.comparisons)


def test_two_lanes_with_no_kv_budget_give_the_same_results(builtin, requests):
    one = Engine(builtin, lanes=1, prefix_cache_bytes=0, encoder_cache_bytes=0)
    alone = [one.select(im, p, max_new_tokens=MAX_NEW, use_cache=False) for im, p in requests]
    one.close()
    two = Engine(builtin, lanes=2, prefix_cache_bytes=0)  # each lane's store: 0 bytes, one request at a time
    for attempt in ("cold", "warm"):
        got = run_clients(two, requests, 6)
        assert all(same(g, ref) for g, ref in zip(got, alone)), attempt
        assert two.load_stats()["prefix_cache_bytes"] == 0
    two.close()
