"""KVStore: pinning, byte budget, LRU eviction of unpinned entries only, private entries, fork masks."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine.engine.kv_store import KVStore, make_key


class FakeKV:
    def __init__(self, nbytes: int, tag: str = "") -> None:
        self.nbytes, self.tag = nbytes, tag


def _key(n: int, scope: str = ""):
    return make_key([1, 2, n], [(f"img{n}", (1, 2, 2))], scope)


def _put(store: KVStore, n: int, nbytes: int = 100, slots: int = 3, scope: str = "", retain: bool = True):
    return store.insert(_key(n, scope), FakeKV(nbytes, str(n)), np.ones(slots, bool), slots - 1, retain=retain)


def test_pinned_entries_survive_any_budget():
    store = KVStore(250, lambda kv: kv.nbytes)
    a, b, c = _put(store, 1), _put(store, 2), _put(store, 3)  # 300 bytes, all pinned: nothing may go
    assert len(store) == 3 and store.pinned_bytes == 300 and (store.pinned_bytes > store.capacity)
    assert store.acquire(_key(1)) is a and store.acquire(_key(2)) is b and store.acquire(_key(3)) is c
    for e in (a, b, c):
        store.release(e)
    assert len(store) == 3 and store.pinned_bytes == 300 and store.evictions == 0  # each still pinned once
    store.release(b)  # unpinned while over budget: evicted at once
    assert len(store) == 2 and store.nbytes == 200 and store.evictions == 1
    assert store.pinned_bytes <= store.capacity


def test_eviction_order_and_budget():
    store = KVStore(250, lambda kv: kv.nbytes)
    a, b, c = _put(store, 1), _put(store, 2), _put(store, 3)
    store.release(b)
    assert store.acquire(_key(2)) is None  # over budget (300 > 250): the only unpinned entry went at once
    assert store.evictions == 1 and store.nbytes == 200 and not (store.pinned_bytes > store.capacity)
    store.release(a)
    store.release(c)
    assert store.nbytes == 200 and len(store) == 2  # within budget: both kept
    d = _put(store, 4)  # 300 bytes again: the LRU unpinned (a, released before c) goes
    assert store.acquire(_key(1)) is None and store.acquire(_key(3)) is not None
    assert store.nbytes == 200 and store.pinned_bytes == 200
    store.release(d)


def test_acquire_refreshes_lru_position():
    store = KVStore(200, lambda kv: kv.nbytes)
    a, b = _put(store, 1), _put(store, 2)
    store.release(a)
    store.release(b)
    store.release(store.acquire(_key(1)))  # a used again: b is now the least recently used
    store.release(_put(store, 3))
    assert store.acquire(_key(2)) is None and store.acquire(_key(1)) is not None


def test_zero_budget_keeps_only_what_is_pinned():
    store = KVStore(0, lambda kv: kv.nbytes)
    a = _put(store, 1)
    assert store.acquire(_key(1)) is a  # shared while pinned
    store.release(a)
    store.release(a)
    assert len(store) == 0 and store.nbytes == 0 and store.pinned_bytes == 0


def test_private_entries_are_invisible_to_other_scopes_and_dropped_at_release():
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    mine = _put(store, 1, scope="request-1", retain=False)
    assert store.acquire(_key(1)) is None and store.acquire(_key(1, "request-2")) is None
    store.release(mine)
    assert len(store) == 0 and store.acquire(_key(1, "request-1")) is None


def test_full_key_check_behind_the_digest(monkeypatch):
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    store.release(_put(store, 1))
    monkeypatch.setattr(type(_key(2)), "digest", lambda self: "collide")
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    first = _put(store, 1)
    assert store.acquire(_key(2)) is None  # same digest, other key: not trusted
    second = _put(store, 2)  # cannot displace the pinned one: kept private to its user
    assert second is not first and second.key == _key(2) and not second.retain
    store.release(second)
    store.release(first)
    assert store.acquire(_key(1)) is first


def test_release_of_an_unpinned_entry_is_an_error():
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    e = _put(store, 1)
    store.release(e)
    with pytest.raises(RuntimeError, match="not pinned"):
        store.release(e)


def test_insert_of_an_existing_key_shares_the_entry():
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    a, again = _put(store, 1), _put(store, 1)
    assert again is a and a.refs == 2 and store.nbytes == 100


def test_fork_pads_rows_and_masks_the_padding():
    store = KVStore(1 << 20, lambda kv: kv.nbytes)
    short = store.insert(_key(1), FakeKV(10), np.array([True, True]), 1)
    gap = store.insert(_key(2), FakeKV(10), np.array([True, False, True, True]), 3)

    class Runner:
        def kv_stack(self, kvs, length, reserve=0):
            return ("stacked", [k.nbytes for k in kvs], length, reserve)

    kv, mask = store.fork(Runner(), [short, gap, short], reserve=5)
    assert kv == ("stacked", [10, 10, 10], 4, 5)
    assert mask.tolist() == [[True, True, False, False], [True, False, True, True], [True, True, False, False]]
