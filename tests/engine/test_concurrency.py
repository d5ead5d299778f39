"""Results do not depend on concurrency or cache sizes: every mode x strategy, 1, 4 and 16 concurrent clients, the
KV budget at one entry and at zero, cold and warm, all equal the same requests run alone with caches off."""

from __future__ import annotations


import numpy as np
import pytest

import concurrent_clients
from concurrent_clients import same
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine

MODES = ["fast", "reason", "hybrid"]
STRATEGIES = ["knockout", "round_robin"]
MAX_NEW = 6


@pytest.fixture(scope="module")
def pool():
    # mostly one size (rectangular batches), two odd sizes so some batches pad
    odd = [make_test_image(84, 56, 21), make_test_image(56, 28, 22)]
    return [make_test_image(56, 56, seed=s) for s in range(6)] + odd


def requests(pool, n: int = 16):
    out = []
    for k in range(n):
        idx = [(k + j * 3) % len(pool) for j in range(3 + k % 3)]
        profile = {"title": f"Trail running shoes model {k % 5}", "queries": ["running sale", f"size {k % 4}"]}
        out.append(([pool[i] for i in dict.fromkeys(idx)], profile))
    return out


def run_clients(engine, reqs, clients: int, **options) -> list:
    return concurrent_clients.run_clients(engine, reqs, clients, max_new_tokens=MAX_NEW, **options)


@pytest.fixture(scope="module")
def alone(tiny_ckpt, pool):
    """The reference: each request alone, one after the other, every cache off."""
    eng = Engine(tiny_ckpt, backend="torch", encoder_cache_bytes=0, prefix_cache_bytes=0)
    ref = {}
    for mode in MODES:
        for strategy in STRATEGIES:
            ref[mode, strategy] = [eng.select(im, p, mode=mode, strategy=strategy, max_new_tokens=MAX_NEW,
                                              use_cache=False) for im, p in requests(pool)]
    eng.close()
    return ref


@pytest.fixture(scope="module")
def shared(tiny_ckpt):
    eng = Engine(tiny_ckpt, backend="torch")
    yield eng
    eng.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("clients", [1, 4, 16])
def test_concurrent_clients_get_the_results_of_requests_alone(shared, alone, pool, mode, strategy, clients):
    got = run_clients(shared, requests(pool), clients, mode=mode, strategy=strategy)
    for k, (g, ref) in enumerate(zip(got, alone[mode, strategy])):
        assert same(g, ref), f"request {k}"
    if mode == "hybrid":
        assert any(c.mode == "reason" for g in got for c in g.comparisons)


def _one_entry_bytes(tiny_ckpt, pool) -> int:
    eng = Engine(tiny_ckpt, backend="torch")
    eng.select(pool[:3], requests(pool)[0][1])
    size = max(e.nbytes for e in eng.core.lanes[0].store._entries.values())  # the largest [prefix + A] entry
    eng.close()
    return size


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tiny_kv_budgets_change_nothing_cold_or_warm(tiny_ckpt, pool, alone, strategy):
    one = _one_entry_bytes(tiny_ckpt, pool)
    reqs = requests(pool)
    for budget in (one, 0):
        eng = Engine(tiny_ckpt, backend="torch", prefix_cache_bytes=budget)
        for attempt in ("cold", "warm"):
            got = run_clients(eng, reqs, 4, mode="fast", strategy=strategy)
            for k, (g, ref) in enumerate(zip(got, alone["fast", strategy])):
                assert same(g, ref), f"budget {budget}, {attempt}, request {k}"
            assert eng.core.lanes[0].store.nbytes <= budget and eng.core.lanes[0].store.pinned_bytes == 0
        eng.close()


def test_warm_round_robin_beyond_the_cache_size_does_not_break(tiny_ckpt, pool, alone):
    # the crash this issue was filed for: a warm select whose working set exceeds the prefix cache
    one = _one_entry_bytes(tiny_ckpt, pool)
    eng = Engine(tiny_ckpt, backend="torch", prefix_cache_bytes=2 * one)
    im, p = requests(pool)[5]
    first = eng.select(im, p, strategy="round_robin", max_new_tokens=MAX_NEW)
    again = eng.select(im, p, strategy="round_robin", max_new_tokens=MAX_NEW)
    assert same(first, alone["fast", "round_robin"][5]) and same(again, first)
    assert again.stats.get("prefix_cache_hits", 0) >= 1
    eng.close()


def test_async_selects_equal_sync(shared, pool, alone):
    import asyncio

    reqs = requests(pool)[:6]

    async def main():
        return await asyncio.gather(*(shared.select_async(im, p, strategy="knockout", max_new_tokens=MAX_NEW)
                                      for im, p in reqs))

    got = asyncio.run(main())
    for g, ref in zip(got, alone["fast", "knockout"][:6]):
        assert same(g, ref)
    assert np.isfinite([c.prob_a for g in got for c in g.comparisons]).all()
