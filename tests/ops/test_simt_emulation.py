"""The SIMT emulator (csrc/include/c4u/simt_emulation.h) on its own test kernels (c4u/simt_selftest.cuh): a block
reduction, a warp scan with votes and atomics, a butterfly reduction, half/bf16 through CUDA's headers, a planted
missing barrier whose wrong result the schedules expose, and a divergent barrier reported as a deadlock."""

from __future__ import annotations

import numpy as np
import pytest

E = pytest.importorskip("c4u_engine._C_emulated", reason="the emulated-kernel module is built on Linux only")

ORDERS = ["forward", "reverse", "shuffled"]


@pytest.fixture(params=ORDERS)
def order(request):
    E.set_schedule(request.param, 7)
    yield request.param
    E.set_schedule("forward", 0)


@pytest.mark.parametrize("threads,n_per_block", [(32, 5), (64, 64), (256, 1000), (1024, 3001)])
def test_block_sum_matches_numpy(order, threads, n_per_block):
    rng = np.random.default_rng(threads)
    blocks = 3
    x = rng.integers(-8, 9, size=(blocks, n_per_block)).astype(np.float32)  # integers: sums are exact in fp32
    out = np.full(blocks, np.nan, dtype=np.float32)
    E.block_sum(x.ctypes.data, blocks, n_per_block, threads, out.ctypes.data)
    np.testing.assert_array_equal(out, x.sum(axis=1))
    stats = E.last_launch_stats()
    # One barrier after staging, one per tree level down to 32 lanes; five shuffle rounds of two warp syncs.
    levels = int(np.log2(threads)) - 5
    assert stats["blocks"] == blocks and stats["threads"] == blocks * threads
    assert stats["barriers"] == blocks * (1 + levels)
    assert stats["warp_syncs"] == blocks * 5 * 2


def test_warp_scan_votes_and_atomics(order):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 100, size=(6, 32)).astype(np.int32)
    x[1, 7] = -3  # only warp 1 has a negative value
    x[4, 30] = 5000  # only warp 4 has one >= 1000
    flat = np.ascontiguousarray(x.ravel())
    out = np.zeros_like(flat)
    odd = np.zeros(6, np.int32)
    flags = np.zeros((6, 2), np.int32)
    total = np.zeros(1, np.uint64)
    E.warp_scan(flat.ctypes.data, flat.size, 64, out.ctypes.data, odd.ctypes.data, flags.ctypes.data, total.ctypes.data)
    np.testing.assert_array_equal(out.reshape(6, 32), np.cumsum(x, axis=1))
    np.testing.assert_array_equal(odd, (x % 2 != 0).sum(axis=1))
    np.testing.assert_array_equal(flags[:, 0], (x < 0).any(axis=1))
    np.testing.assert_array_equal(flags[:, 1], (x < 1000).all(axis=1))
    assert int(total[0]) == int(x.sum())


def test_shfl_xor_butterfly(order):
    x = np.random.default_rng(2).standard_normal(96).astype(np.float32)
    out = np.zeros_like(x)
    E.warp_max_xor(x.ctypes.data, x.size, 96, out.ctypes.data)
    np.testing.assert_array_equal(out, np.repeat(x.reshape(3, 32).max(axis=1), 32))


@pytest.mark.skipif(not getattr(E, "have_half", False), reason="built without CUDA's cuda_fp16.h / cuda_bf16.h")
def test_half_and_bf16_through_cuda_headers(order):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    h = torch.from_numpy(rng.standard_normal((2, 64)).astype(np.float32)).to(torch.float16)
    b = torch.from_numpy(rng.standard_normal((2, 64)).astype(np.float32)).to(torch.bfloat16)
    out = np.zeros(2, np.float32)
    E.half_dot(h.data_ptr(), b.data_ptr(), 2, 64, out.ctypes.data)
    # torch's own half/bf16 rounding as the reference: product rounded to half, then to bf16, summed in order.
    product = (h.float() * b.float().to(torch.float16).float()).to(torch.float16).float().to(torch.bfloat16).float()
    expected = np.array([np.float32(sum(np.float32(v) for v in row)) for row in product.numpy()], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert not np.array_equal(out, (h.float() * b.float()).sum(dim=1).numpy())  # the roundings are really there


def test_planted_missing_barrier_depends_on_the_schedule():
    x = np.arange(1, 129, dtype=np.float32)
    reference = np.roll(x.reshape(2, 64), -1, axis=1).ravel()
    results = {}
    for order in ORDERS:
        for with_barrier in (True, False):
            E.set_schedule(order, 11)
            out = np.zeros_like(x)
            E.rotate_shared(x.ctypes.data, x.size, 64, with_barrier, out.ctypes.data)
            results[order, with_barrier] = out
    E.set_schedule("forward", 0)
    for order in ORDERS:
        np.testing.assert_array_equal(results[order, True], reference)  # with the barrier: right in every order
    broken = [results[order, False] for order in ORDERS]
    # Without it every order reads some slot before its writer ran (poisoned shared memory reads NaN), and the
    # orders disagree with each other: the race is visible however the threads happen to run.
    for out in broken:
        assert not np.array_equal(out, reference)
    assert not np.array_equal(broken[0], broken[1], equal_nan=True)
    assert not np.array_equal(broken[1], broken[2], equal_nan=True)


def test_planted_missing_barrier_before_slot_reuse_is_exposed():
    """A warp may run ahead of the others between block barriers; the emulator lets it, so a reduction that reuses
    its shared slots without a barrier first overwrites a slot the slower warp still has to read."""
    x = np.arange(1, 129, dtype=np.float32)  # 2 blocks of 64 threads (2 warps each)
    per_block = x.reshape(2, 64)
    sums = np.stack([per_block.sum(axis=1), (2 * per_block + 1).sum(axis=1)], axis=1)
    reference = np.repeat(sums.ravel(), 2)  # what each of the 2 warps of a block reads
    for order in ORDERS:
        E.set_schedule(order, 5)
        good, bad = np.zeros(8, np.float32), np.zeros(8, np.float32)
        E.two_sums(x.ctypes.data, 2, 64, True, good.ctypes.data)
        E.two_sums(x.ctypes.data, 2, 64, False, bad.ctypes.data)
        np.testing.assert_array_equal(good, reference)
        # forward: warp 0 runs ahead and clobbers warp 1's read; reverse: the other way round; shuffled: either
        assert not np.array_equal(bad, reference), order
    E.set_schedule("forward", 0)


def test_stale_shared_memory_is_poisoned_between_launches():
    # A correct run leaves the right values in shared memory; the racy kernel must still not find them there.
    x = np.arange(64, dtype=np.float32)
    out = np.zeros_like(x)
    E.set_schedule("forward", 0)
    E.rotate_shared(x.ctypes.data, 64, 64, True, out.ctypes.data)
    E.rotate_shared(x.ctypes.data, 64, 64, False, out.ctypes.data)
    assert np.isnan(out).sum() == 63  # forward order: only the last thread reads a slot already written


def test_divergent_barrier_is_a_deadlock_not_a_hang():
    out = np.zeros(64, np.float32)
    with pytest.raises(RuntimeError, match="deadlock"):
        E.divergent_barrier(64, 10, out.ctypes.data)


def test_bad_launch_is_rejected():
    out = np.zeros(2048, np.float32)
    with pytest.raises(ValueError, match="1 to 1024"):
        E.block_sum(out.ctypes.data, 1, 4, 2048, out.ctypes.data)
    with pytest.raises(ValueError, match="order must be"):
        E.set_schedule("backwards", 0)
    assert "two_sums" in dir(E)
