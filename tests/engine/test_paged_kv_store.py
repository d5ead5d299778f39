"""The paged KV store (engine/paged_kv_store.py): block sharing and copy-on-write, block lifetimes, forks equal to the
contiguous store's, and selections on it equal to today's path (every mode x strategy, torch and onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.runners.base import RunnerCapabilities
from c4u_engine.api import Engine
from c4u_engine.engine.config import EngineConfig
from c4u_engine.engine.kv_store import KVStore, make_key
from c4u_engine.engine.paged_kv_store import PagedKV, PagedKVStore
from c4u_engine.errors import BackendUnavailableError, InvalidInputError

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}


class ArrayKV:
    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class ArrayRunner:
    """The KV half of a runner, on numpy (like the onnxruntime runner): what the store calls."""

    name, device, num_layers, num_kv_heads, head_dim = "arrays", "cpu", 2, 3, 80
    capabilities = RunnerCapabilities(concurrent_calls=False, paged_kv=True, paged_decode_rows=False,
                                      kernel_device=None, device_pixels=False, intra_op_threads=None)

    def kv_layers(self, kv):
        return kv.keys, kv.values, kv.keys[0].shape[2]

    def kv_empty(self, batch, length, reserve=0):
        shape = (batch, self.num_kv_heads, length + reserve, self.head_dim)
        return ArrayKV([np.zeros(shape, np.float32) for _ in range(2)], [np.zeros(shape, np.float32) for _ in range(2)])

    def kv_stack(self, kvs, length, reserve=0):
        out = self.kv_empty(sum(kv.keys[0].shape[0] for kv in kvs), length, reserve)
        row = 0
        for kv in kvs:
            n = kv.keys[0].shape[2]
            for dst, src in zip(out.keys + out.values, kv.keys + kv.values):
                dst[row : row + 1, :, :n] = src
            row += 1
        return out

    def kv_nbytes(self, kv):
        return sum(t.nbytes for t in kv.keys + kv.values)

    def random_kv(self, length, seed, like=None):
        rng = np.random.default_rng(seed)
        shape = (1, self.num_kv_heads, length, self.head_dim)
        kv = ArrayKV([rng.standard_normal(shape).astype(np.float32) for _ in range(2)],
                     [rng.standard_normal(shape).astype(np.float32) for _ in range(2)])
        if like is not None:  # continue `like`: its slots first, as a runner's forward returns them
            n = like.keys[0].shape[2]
            for dst, src in zip(kv.keys + kv.values, like.keys + like.values):
                dst[:, :, :n] = src
        return kv


def key(n: int):
    return make_key(list(range(n)), [])


def test_child_shares_full_blocks_and_copies_the_partial_one():
    runner = ArrayRunner()
    store = PagedKVStore(1 << 30, runner, block_size=16)
    parent_kv = runner.random_kv(21, seed=1)
    parent = store.insert(key(21), parent_kv, np.ones(21, bool), 20)
    child_kv = runner.random_kv(40, seed=2, like=parent_kv)
    child = store.insert(key(40), child_kv, np.ones(40, bool), 39, parent=parent)
    assert isinstance(child.kv, PagedKV)
    assert child.kv.blocks[0] == parent.kv.blocks[0]  # the full block is shared
    assert child.kv.blocks[1] != parent.kv.blocks[1]  # the partly filled one was copied before appending
    assert store.pool.blocks_in_use == 2 + 2  # parent 2; child: 1 copy + 1 new (block 0 shared)
    forked, mask = store.fork(runner, [parent, child], reserve=3)
    expected = runner.kv_stack([parent_kv, child_kv], 40, reserve=3)
    for got, want in zip(forked.keys + forked.values, expected.keys + expected.values):
        np.testing.assert_array_equal(got, want)  # exact, zero padding and reserve included
    assert mask.tolist() == [[True] * 21 + [False] * 19, [True] * 40]

    store.release(parent)
    store.clear()  # the parent goes; its shared block lives on in the child
    assert len(store) == 1 and store.pool.blocks_in_use == 3
    forked, _ = store.fork(runner, [child])
    np.testing.assert_array_equal(forked.keys[1], child_kv.keys[1])
    store.release(child)
    store.clear()
    assert store.pool.blocks_in_use == 0 and store.nbytes == 0 and store.pinned_bytes == 0


def test_parent_with_other_padding_is_copied_not_shared():
    runner = ArrayRunner()
    store = PagedKVStore(1 << 30, runner, block_size=8)
    parent_kv = runner.random_kv(16, seed=3)
    parent = store.insert(key(16), parent_kv, np.ones(16, bool), 15)
    mask = np.ones(20, bool)
    mask[3] = False  # not the parent's slots: nothing may be shared
    child = store.insert(key(20), runner.random_kv(20, seed=4, like=parent_kv), mask, 19, parent=parent)
    assert not set(child.kv.blocks) & set(parent.kv.blocks)


def test_same_key_twice_keeps_one_copy_and_budget_evicts_blocks():
    runner = ArrayRunner()
    block_bytes = 2 * 2 * 4 * 3 * 80 * 4  # K and V, 2 layers, 4 slots, 3 heads, head_dim 80, float32
    store = PagedKVStore(3 * block_bytes, runner, block_size=4)
    kv = runner.random_kv(10, seed=5)
    first = store.insert(key(10), kv, np.ones(10, bool), 9)
    again = store.insert(key(10), runner.random_kv(10, seed=6), np.ones(10, bool), 9)
    assert again is first and first.refs == 2 and store.pool.blocks_in_use == 3
    assert store.nbytes == 3 * block_bytes
    store.release(first)
    store.release(first)
    other = store.insert(key(5), runner.random_kv(5, seed=7), np.ones(5, bool), 4)  # over budget: evicts `first`
    assert len(store) == 1 and store.evictions == 1 and store.pool.blocks_in_use == 2
    store.release(other)


def test_pool_grows_past_its_first_allocation():
    runner = ArrayRunner()
    store = PagedKVStore(1 << 30, runner, block_size=1)
    kvs = [runner.random_kv(50, seed=s) for s in range(3)]  # 150 blocks > the first 64
    entries = [store.insert(key(50 + s), kv, np.ones(50, bool), 49) for s, kv in enumerate(kvs)]
    forked, _ = store.fork(runner, entries)
    for r, kv in enumerate(kvs):
        np.testing.assert_array_equal(forked.values[0][r], kv.values[0][0])


def test_bad_settings_are_typed_errors(tiny_ckpt):
    with pytest.raises(InvalidInputError, match="kv_layout must be one of"):
        EngineConfig(kv_layout="ragged")
    with pytest.raises(InvalidInputError, match="kv_block_size"):
        EngineConfig(kv_block_size=0)
    with pytest.raises(InvalidInputError, match="block_size"):
        PagedKVStore(0, ArrayRunner(), block_size=0)

    class Opaque:  # declares no paged KV (as the TensorRT runner)
        name, device = "opaque", "cpu"
        capabilities = RunnerCapabilities(concurrent_calls=False, paged_kv=False, paged_decode_rows=False,
                                          kernel_device=None, device_pixels=False, intra_op_threads=None)

    with pytest.raises(BackendUnavailableError, match="opaque runner"):
        PagedKVStore(0, Opaque())


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(90, 45, 11),
                                                                   make_test_image(40, 70, 12)]


@pytest.fixture(scope="module")
def engines(tiny_ckpt):
    return {layout: Engine(tiny_ckpt, backend="torch", kv_layout=layout, kv_block_size=5)
            for layout in ("contiguous", "paged")}


@pytest.mark.parametrize("strategy", ["knockout", "round_robin"])
@pytest.mark.parametrize("mode", ["fast", "reason", "hybrid"])
def test_paged_selection_equals_contiguous(engines, images, mode, strategy):
    kwargs = {"mode": mode, "strategy": strategy}
    if mode != "fast":
        kwargs["max_new_tokens"] = 8
    picked = images if mode == "fast" else images[:4]
    want = engines["contiguous"].select(picked, PROFILE, **kwargs)
    got = engines["paged"].select(picked, PROFILE, **kwargs)
    paged, contiguous = (engines[k].core.lanes[0].store for k in ("paged", "contiguous"))
    assert isinstance(paged, PagedKVStore) and type(contiguous) is KVStore
    assert paged.pool is not None and paged.pool.blocks_in_use > 0
    assert [(c.first, c.second, c.answer) for c in got.comparisons] == \
        [(c.first, c.second, c.answer) for c in want.comparisons]
    for a, b in zip(got.comparisons, want.comparisons):
        assert abs(a.prob_a - b.prob_a) <= 1e-5
    assert got.ranking == want.ranking


def test_paged_store_shares_prefix_blocks_in_a_selection(engines, images):
    store = engines["paged"].core.lanes[0].store
    engines["paged"].clear_caches()
    engines["paged"].select(images[:4], PROFILE, strategy="round_robin")
    entries = list(store._entries.values())
    with_images = [e for e in entries if e.key.image_hashes]
    (prefix,) = [e for e in entries if not e.key.image_hashes and len(e.key.token_ids) == max(
        len(x.key.token_ids) for x in entries if not x.key.image_hashes)]
    full = prefix.slots // store.block_size
    assert len(with_images) == 4 and full >= 2
    # every [prefix + A] entry reads its [prefix]'s full blocks in place instead of a copy of them
    assert all(e.kv.blocks[:full] == prefix.kv.blocks[:full] for e in with_images)
    # its last full block (not the system turn's, which the prefix shares too): the prefix and four images A
    assert store.pool.refs[prefix.kv.blocks[full - 1]] == 1 + len(with_images)


def test_onnxruntime_runner_on_the_paged_store(images):
    from c4u_engine.builtin import builtin_model_dir

    model = builtin_model_dir()  # shipped with the package: its absence is a failure, not a skip
    picked = images[:3]
    want = Engine(model, backend="onnxruntime").select(picked, PROFILE, strategy="round_robin")
    got = Engine(model, backend="onnxruntime", kv_layout="paged").select(picked, PROFILE, strategy="round_robin")
    assert (got.winner, got.ranking) == (want.winner, want.ranking) and len(got.comparisons) == 6
    assert [(c.first, c.second, c.answer) for c in got.comparisons] == \
        [(c.first, c.second, c.answer) for c in want.comparisons]
    for a, b in zip(got.comparisons, want.comparisons):
        assert abs(a.prob_a - b.prob_a) <= 1e-5


@pytest.mark.cuda
def test_paged_selection_on_cuda_equals_contiguous(tiny_ckpt, images):
    """The paged store on a GPU: pools are CUDA tensors and the paged-KV CUDA kernels fork them."""
    kwargs = dict(backend="torch", device="cuda", dtype="float32")
    want = Engine(tiny_ckpt, **kwargs).select(images[:4], PROFILE, strategy="round_robin")
    paged = Engine(tiny_ckpt, kv_layout="paged", **kwargs)
    got = paged.select(images[:4], PROFILE, strategy="round_robin")
    assert paged.core.lanes[0].store.device == "cuda" and paged.core.lanes[0].store.pool.keys[0].is_cuda
    assert got.ranking == want.ranking
    for a, b in zip(got.comparisons, want.comparisons):
        assert abs(a.prob_a - b.prob_a) <= 1e-5
