"""The whole engine through the kernels (issue 15 item 3, TorchRunner.use_kernels, a test-only dispatch on CPU):
with the paged store, reasoning rows decode in the store's own block pools (paged append + cascade attention, rows
grouped by their [prefix + A] entry), and the embedding merge, M-RoPE positions and sampling run through ops/ too.
Same P(A) as the reference path within 1e-4 and the same greedy reasoning text, on the CPU twins and on the CUDA
kernel sources under the SIMT emulator; the kernels must actually have run, and no pool block may leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.engine.sampling import Sampler, SamplingParams
from c4u_engine.errors import BackendUnavailableError
from c4u_engine.ops import paged_kv
from c4u_engine.ops.dispatch import emulated_why_not
from c4u_engine.runners.kernel_mode import KernelMode

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}
_NO_EMULATOR = pytest.mark.skipif(emulated_why_not() is not None, reason=f"{emulated_why_not()}")
KERNELS = ["cpu", pytest.param("emulated", marks=_NO_EMULATOR), pytest.param("cuda", marks=pytest.mark.cuda)]
# (mode, strategy, images): round robin over 3 images shares each A among 2 rows; knockout over 4 has two rounds;
# the 56x84 image gives entries of another length (padding between a row's entry and its comparison tokens).
CASES = [("reason", "round_robin", 3), ("reason", "knockout", 4), ("fast", "knockout", 4), ("fast", "round_robin", 3)]


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(3)] + [make_test_image(56, 84, seed=9)]


@pytest.fixture(scope="module")
def references(tiny_ckpt, images):
    engine = Engine(tiny_ckpt, backend="torch")  # today's path: contiguous store, SDPA, numpy sampling
    return {(m, s, n): engine.select(images[-n:], PROFILE, mode=m, strategy=s, max_new_tokens=6) for m, s, n in CASES}


def _held_blocks(store) -> int:
    return len({b for e in store._entries.values() for b in e.kv.blocks})


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_engine_through_the_kernels_matches_the_reference(tiny_ckpt, images, references, kernels, case):
    mode, strategy, n = case
    device = "cuda" if kernels == "cuda" else "cpu"
    reference = references[case]
    if device == "cuda":
        reference = Engine(tiny_ckpt, backend="torch", device="cuda").select(
            images[-n:], PROFILE, mode=mode, strategy=strategy, max_new_tokens=6)
    engine = Engine(tiny_ckpt, backend="torch", device=device, kv_layout="paged")
    assert engine.runner.use_kernels(kernels) is None
    got = engine.select(images[-n:], PROFILE, mode=mode, strategy=strategy, max_new_tokens=6)
    calls = engine.runner.kernels.calls
    assert calls["embed_merge"] > 0 and calls["mrope"] > 0
    if mode == "reason":
        layers = engine.runner.num_layers
        assert calls["sample"] > 0 and calls["cascade_attention"] > 0 and calls["cascade_attention"] % layers == 0
        if strategy == "round_robin":  # each image A is compared with two others: its entry read once per group
            assert calls["shared_slots"] > 0
    assert len(got.comparisons) == len(reference.comparisons) > 0
    for a, b in zip(got.comparisons, reference.comparisons):
        assert (a.first, a.second, a.raw_text, a.reasoning) == (b.first, b.second, b.raw_text, b.reasoning)
        assert abs(a.prob_a - b.prob_a) <= 1e-4
    assert got.ranking == reference.ranking
    # decode rows gave their blocks back: only the cached entries hold blocks now
    assert engine.core.lanes[0].store.pool.blocks_in_use == _held_blocks(engine.core.lanes[0].store)


def test_rows_joining_a_running_paged_batch(tiny_ckpt, images, references, monkeypatch):
    """max_batch_tokens=64: the round's comparisons join the decode batch over several steps, so cohorts of paged rows
    are merged (block tables concatenated, no copy) and rows leave at different times; same results, no leak."""
    from c4u_engine.runners.paged_rows import PagedRows

    stacked = []
    original = PagedRows.stack
    monkeypatch.setattr(PagedRows, "stack", staticmethod(lambda parts, length: stacked.append(len(parts))
                                                         or original(parts, length)))
    engine = Engine(tiny_ckpt, backend="torch", kv_layout="paged", max_batch_tokens=64)
    assert engine.runner.use_kernels("cpu") is None
    case = CASES[0]
    got = engine.select(images[-case[2]:], PROFILE, mode=case[0], strategy=case[1], max_new_tokens=6)
    assert stacked and max(stacked) >= 2
    for a, b in zip(got.comparisons, references[case].comparisons):
        assert a.raw_text == b.raw_text and abs(a.prob_a - b.prob_a) <= 1e-4
    assert engine.core.lanes[0].store.pool.blocks_in_use == _held_blocks(engine.core.lanes[0].store)


def test_contiguous_store_in_kernel_mode_matches(tiny_ckpt, images, references):
    """Kernel mode without the paged store: decode attention through the cascade view of contiguous KVs."""
    engine = Engine(tiny_ckpt, backend="torch")
    assert engine.runner.use_kernels("cpu") is None
    case = CASES[0]
    got = engine.select(images[-case[2]:], PROFILE, mode=case[0], strategy=case[1], max_new_tokens=6)
    assert engine.runner.decode_attention.shared_slots > 0
    assert engine.runner.kernels.calls["sample"] > 0
    for a, b in zip(got.comparisons, references[case].comparisons):
        assert a.raw_text == b.raw_text and abs(a.prob_a - b.prob_a) <= 1e-4


def test_decode_rows_share_clean_entries_and_copy_holed_ones(tiny_ckpt):
    """PagedKVStore.decode_rows: a row continuing a hole-free entry shares its blocks (read by the shared pass), a
    row whose entry holds padding reads its real slots, compact, from its own blocks; either way the row's slots
    in the pools are exactly its real slots in order."""
    engine = Engine(tiny_ckpt, backend="torch", kv_layout="paged", kv_block_size=4)
    with torch.inference_mode():  # the runner's KV buffers are inference tensors
        _check_decode_rows(engine)


def _check_decode_rows(engine):
    runner, store = engine.runner, engine.core.lanes[0].store
    assert runner.use_kernels("cpu") is None
    gen = torch.Generator().manual_seed(0)

    def random_kv(length):
        kv = runner.kv_empty(1, length)
        for t in kv.keys + kv.values:
            t.copy_(torch.randn(t.shape, generator=gen))
        return kv

    from c4u_engine.engine.kv_store import make_key

    clean = store.insert(make_key([1] * 6, []), random_kv(6), np.ones(6, bool), 5)
    holed_mask = np.array([1, 1, 0, 0, 1, 1, 1], bool)
    holed = store.insert(make_key([2] * 7, []), random_kv(7), holed_mask, 6)
    forked, fork_mask = store.fork(runner, [clean, clean, holed], reserve=3)
    lens = [3, 2, 3]
    mask = np.concatenate([fork_mask, np.arange(3)[None, :] < np.array(lens)[:, None]], axis=1)
    for t in forked.keys + forked.values:  # the new tokens' slots, as a comparison prefill writes them
        t[:, :, 7:10] = torch.randn(t[:, :, 7:10].shape, generator=gen)
    forked.length = 10
    rows = store.decode_rows(runner, forked, mask, [clean, clean, holed], lens)
    assert [r.shared_len for r in rows.rows] == [6, 6, 0]
    assert rows.rows[0].shared_blocks == rows.rows[1].shared_blocks == tuple(clean.kv.blocks)
    assert rows.rows[0].table[:1] == clean.kv.blocks[:1]  # the full block is shared, the partial one is not
    meta = rows.step_metadata(0)
    assert meta["group_rows"].tolist() == [0, 2, 3] and meta["shared_lens"].tolist() == [6, 0]
    pool = store.pool

    def gather(table, n):
        k = torch.zeros((1, runner.num_kv_heads, n, runner.head_dim))
        v = torch.zeros_like(k)
        for layer in range(runner.num_layers):
            paged_kv.gather(pool.keys[layer], pool.values[layer], np.array([table], np.int32),
                            np.array([n], np.int32), k, v)
            yield layer, k.clone(), v.clone()

    for r, row in enumerate(rows.rows):
        real = np.flatnonzero(mask[r])
        assert row.seq_len == len(real)
        # the shared pass reads positions [0, shared_len) through the entry's blocks, the row's own pass the
        # positions from shared_len on through the row's table
        own = {layer: (k, v) for layer, k, v in gather(row.table, row.seq_len)}
        head = {layer: (k, v) for layer, k, v in gather(list(row.shared_blocks), row.shared_len)} \
            if row.shared_len else {}
        for layer in range(runner.num_layers):
            for i, (whole, src) in enumerate(zip(own[layer], (forked.keys[layer], forked.values[layer]))):
                got = whole.clone()
                if row.shared_len:
                    got[:, :, : row.shared_len] = head[layer][i]
                torch.testing.assert_close(got[0], src[r][:, real], rtol=0, atol=0)
    before = store.pool.blocks_in_use
    rows.release()
    assert store.pool.blocks_in_use < before
    for e in (clean, holed):
        store.release(e)
    store.clear()
    assert store.pool.blocks_in_use == 0


def test_kernel_sampling_greedy_and_seeded():
    logits = np.random.default_rng(0).standard_normal((5, 50)).astype(np.float32)
    logits[2, [3, 7]] = 9.0  # a tie: the lowest id wins, as argmax
    greedy = Sampler(SamplingParams())
    assert greedy.sample_with(KernelMode("cpu"), logits).tolist() == logits.argmax(1).tolist()
    params = SamplingParams(do_sample=True, temperature=0.8, top_k=10, top_p=0.9, seed=7)
    draws = [Sampler(params).sample_with(KernelMode("cpu"), logits) for _ in range(2)]
    assert draws[0].tolist() == draws[1].tolist()  # same seed, same counters
    sampler = Sampler(params)
    first, second = sampler.sample_with(KernelMode("cpu"), logits), sampler.sample_with(KernelMode("cpu"), logits)
    assert first.tolist() != second.tolist()  # the counter moves: fresh noise every step
    for row, tok in zip(logits, first):  # drawn from the top-k set
        assert tok in np.argsort(-row)[:10]
    if emulated_why_not() is None:
        assert Sampler(params).sample_with(KernelMode("emulated"), logits).tolist() == draws[0].tolist()


def test_why_not_keeps_todays_path(tiny_ckpt):
    engine = Engine(tiny_ckpt, backend="torch", kv_layout="paged")
    assert engine.runner.kernels is None  # the default path
    reason = engine.runner.use_kernels("cuda", strict=False)
    assert reason and "cuda" in reason.lower() and engine.runner.kernels is None
    with pytest.raises(BackendUnavailableError, match="kernel attention on 'cuda'"):
        engine.runner.use_kernels("cuda")
    assert engine.runner.use_kernels("cpu") is None and engine.runner.kernels.device == "cpu"
    assert engine.runner.use_kernels(None) is None
    assert engine.runner.kernels is None and engine.runner.decode_attention is None


def test_two_runners_over_one_model_attend_independently(tiny_ckpt):
    # bench_gpu_end_to_end.py shares one set of in-memory weights between today's path and the kernel mode
    from c4u_engine.train.engine_bridge import InMemoryRunner

    model = Engine(tiny_ckpt, backend="torch").runner.model
    today, kernels = InMemoryRunner(model), InMemoryRunner(model)
    assert kernels.use_kernels("cpu") is None
    assert today.decode_attention is None and today.kernels is None and kernels.decode_attention is not None


@pytest.mark.parametrize("where", ["storing an entry", "moving decode rows into the pools"])
def test_a_failed_pool_write_leaks_no_block_and_fails_only_that_request(tiny_ckpt, images, references, monkeypatch,
                                                                        where):
    engine = Engine(tiny_ckpt, backend="torch", kv_layout="paged")
    engine.runner.use_kernels("cpu")
    store, original, state = engine.core.lanes[0].store, paged_kv.append, {"failed": False, "in_rows": False}
    fill = store._fill_decode_rows

    def fill_rows(*args, **kwargs):
        state["in_rows"] = True
        try:
            return fill(*args, **kwargs)
        finally:
            state["in_rows"] = False

    def append_once_failing(*args, **kwargs):
        if not state["failed"] and state["in_rows"] == (where != "storing an entry"):
            state["failed"] = True
            raise RuntimeError("out of device memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "_fill_decode_rows", fill_rows)
    monkeypatch.setattr(paged_kv, "append", append_once_failing)
    from c4u_engine.errors import InferenceError

    with pytest.raises(InferenceError, match="simulated"):
        engine.select(images[-3:], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6)
    assert state["failed"]
    store = engine.core.lanes[0].store
    assert store.pool.blocks_in_use == _held_blocks(store) and store.pinned_bytes == 0
    got = engine.select(images[-3:], PROFILE, mode="reason", strategy="round_robin", max_new_tokens=6)
    want = references[("reason", "round_robin", 3)]
    assert [c.raw_text for c in got.comparisons] == [c.raw_text for c in want.comparisons]
    assert engine.core.lanes[0].store.pool.blocks_in_use == _held_blocks(engine.core.lanes[0].store)


def test_kernel_sampling_without_a_seed_draws_fresh_noise():
    kernels = KernelMode("cpu")
    logits = np.zeros((64, 50), np.float32)  # uniform: every token equally likely
    params = SamplingParams(do_sample=True, temperature=1.0)
    draws = {tuple(Sampler(params).sample_with(kernels, logits)) for _ in range(4)}
    assert len(draws) > 1  # seed None: each sampler its own noise (a fixed key would repeat the same tokens)
    seeded = SamplingParams(do_sample=True, temperature=1.0, seed=7)
    assert len({tuple(Sampler(seeded).sample_with(kernels, logits)) for _ in range(3)}) == 1
