"""ops.sampling: Philox against Random123's known-answer vectors; the rules (argmax, bans, top-k, top-p) against a
float64 reference; the draw distribution; and the same tokens from the CPU twin, the CUDA source under every
emulator schedule, and (marked `cuda`) the GPU."""

from __future__ import annotations

import numpy as np
import pytest

from c4u_engine import _C
from c4u_engine.errors import KernelArgumentError
from c4u_engine.ops.dispatch import emulated_module, emulated_why_not
from c4u_engine.ops.sampling import sample

_NO_EMULATOR = pytest.mark.skipif(emulated_why_not() is not None, reason=f"{emulated_why_not()}")


def test_philox_known_answers():
    # Random123's kat_vectors for philox4x32_10.
    kat = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for counter, key, want in kat:
        assert list(_C.philox4x32_10(counter, key)) == want


def test_exp_and_log_are_within_2_ulp_of_float64():
    """The samplers' own exp and log (basic IEEE operations only, so host and device compute the same bits) against
    float64 over their whole domains as used: exp of s - max_s <= 0, log of u and of -log(u)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([-np.geomspace(1e-30, 79.99, 20000), rng.uniform(-80, 0, 20000), [0.0]]).astype(np.float32)
    got = np.array(_C.sampling_exp_log(x.tolist())[0], np.float32)
    want = np.exp(x.astype(np.float64))
    assert (np.abs(got - want) <= 2 * np.spacing(want.astype(np.float32))).all()
    assert _C.sampling_exp_log([-80.5, -np.inf])[0] == [0.0, 0.0]  # below 2^-115: 0 (its 2^-40 mass is 0 anyway)
    y = np.concatenate([np.geomspace(2.0**-24, 18, 20000), np.geomspace(1.2e-38, 3e38, 2000),
                        1 + np.arange(-300, 300) * 2.0**-23]).astype(np.float32)
    got = np.array(_C.sampling_exp_log(y.tolist())[1], np.float32)
    want = np.log(y.astype(np.float64))
    assert (np.abs(got - want) <= 2 * np.spacing(np.abs(want).astype(np.float32))).all()
    assert np.isnan(_C.sampling_exp_log([1.0])[0][0]) and np.isnan(_C.sampling_exp_log([0.0])[1][0])


def test_gumbel_noise_is_finite_at_both_ends_of_the_philox_word():
    # u = (23 high bits + 0.5) / 2^23: never 0 or 1. (With 24 bits, the word 0xFFFFFFFF rounded to u = 1.0 and the
    # noise was +inf: that token won whatever its logit, 0.9% of the rows sampling over a whole 152k vocabulary.)
    lo, hi = _C.sampling_gumbel_of_word([0, 0xFFFFFFFF])
    assert lo == pytest.approx(-np.log(-np.log(2.0**-24)), rel=1e-6)
    assert hi == pytest.approx(-np.log(-np.log1p(-(2.0**-24))), rel=1e-6)
    words = np.random.default_rng(1).integers(0, 2**32, 5000, dtype=np.uint64)
    g = np.array(_C.sampling_gumbel_of_word(words.tolist()), np.float64)
    u = ((words >> 9).astype(np.float64) + 0.5) / 2.0**23
    np.testing.assert_allclose(g, -np.log(-np.log(u)), rtol=4e-6, atol=4e-7)


def kept_reference(logits: np.ndarray, temperature: float, top_k: int, top_p: float, banned=()) -> set[int]:
    """The tokens a row may draw, in float64 (engine.sampling.Sampler's rules)."""
    s = logits.astype(np.float64) / temperature
    s[list(banned)] = -np.inf
    keep = np.isfinite(s)
    if top_k:
        kth = np.sort(s)[-top_k]
        keep &= s >= kth
    if top_p < 1:
        p = np.where(keep, np.exp(s - s.max()), 0.0)
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        drop = np.zeros_like(keep)
        drop[order] = before >= top_p
        keep &= ~drop
    return set(np.flatnonzero(keep).tolist())


MIXED = dict(temperature=[1.0, 0.7, 1.0, 2.0, 0.0, 0.5, 1.3], top_k=[0, 50, 0, 10, 0, 1, 3],
             top_p=[1.0, 1.0, 0.9, 0.5, 1.0, 1.0, 0.3], offsets=[0, 1, 2, 3, 4, 5, 2**40 + 7],
             banned=[5, 6, 17], ban_rows=[1, 0, 0, 1, 1, 0, 1])


def mixed_logits(seed: int, batch: int = 7, vocab: int = 1003) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((batch, vocab)).astype(np.float32) * 3
    x[:, 5] = 40.0  # a banned id that would win every row where it is not banned
    return x


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5])
def test_rules_against_the_float64_reference(seed):
    x = mixed_logits(seed % 1000)
    tokens = sample(x, seed=seed, **MIXED)
    for b in range(x.shape[0]):
        banned = MIXED["banned"] if MIXED["ban_rows"][b] else []
        if MIXED["temperature"][b] == 0:
            allowed = x[b].copy()
            allowed[banned] = -np.inf
            assert tokens[b] == int(np.argmax(allowed))
            continue
        kept = kept_reference(x[b], MIXED["temperature"][b], MIXED["top_k"][b], MIXED["top_p"][b], banned)
        assert int(tokens[b]) in kept, (b, int(tokens[b]), sorted(kept)[:10])
    assert tokens[5] == int(np.argmax(x[5]))  # top_k 1 is argmax whatever the noise


def test_argmax_ties_take_the_lowest_id():
    x = np.zeros((3, 40), np.float32)
    x[0, [7, 3, 30]] = 2.0
    x[1, [39]] = 1.0
    x[2, [0, 1]] = -1.0
    x[2, 2:] = -np.inf
    assert sample(x).tolist() == [3, 39, 0]
    assert sample(x, banned=[3, 0], ban_rows=True).tolist() == [7, 39, 1]


def test_seed_and_offset_decide_the_draw():
    x = np.zeros((1, 1000), np.float32)  # uniform: every token equally likely, so the noise alone decides
    draws = [int(sample(x, temperature=1.0, seed=9, offsets=k)[0]) for k in range(20)]
    assert len(set(draws)) >= 15  # different offsets, independent draws
    assert draws == [int(sample(x, temperature=1.0, seed=9, offsets=k)[0]) for k in range(20)]
    assert draws != [int(sample(x, temperature=1.0, seed=10, offsets=k)[0]) for k in range(20)]


def test_draw_distribution_matches_the_renormalised_softmax():
    logits = np.array([2.0, 1.5, 1.0, 0.2, -1.0, -3.0], np.float32)
    n = 20000
    x = np.ascontiguousarray(np.broadcast_to(logits, (n, 6)))
    tokens = sample(x, temperature=0.8, top_k=5, top_p=0.9, seed=1234, offsets=np.arange(n))
    s = logits.astype(np.float64) / 0.8
    kept = sorted(kept_reference(logits, 0.8, 5, 0.9))
    p = np.zeros(6)
    p[kept] = np.exp(s[kept] - s.max())
    p /= p.sum()
    freq = np.bincount(tokens, minlength=6) / n
    assert set(np.flatnonzero(freq)) == set(kept)
    assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9).all(), (freq, p)


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffled"])
@_NO_EMULATOR
def test_emulated_cuda_source_draws_the_cpu_twins_tokens(order):
    emulated_module().set_schedule(order, 21)
    try:
        for seed in (0, 77):
            x = mixed_logits(seed, vocab=517)
            np.testing.assert_array_equal(sample(x, seed=seed, device="emulated", **MIXED),
                                          sample(x, seed=seed, device="cpu", **MIXED))
        x = mixed_logits(5, batch=3, vocab=517)
        edges = dict(temperature=1.0, top_k=[517, 516, 2000], top_p=[0.8, 1.0, 0.95], banned=[1, 2], ban_rows=[0, 1, 1])
        np.testing.assert_array_equal(sample(x, seed=4, device="emulated", **edges),
                                      sample(x, seed=4, device="cpu", **edges))
        x = np.zeros((2, 64), np.float32)
        x[:, 10] = x[:, 50] = 1.0
        assert sample(x, device="emulated").tolist() == [10, 10]
    finally:
        emulated_module().set_schedule("forward", 0)


@pytest.mark.cuda
def test_cuda_draws_the_cpu_twins_tokens():
    # Equal by construction, not by luck: the kernel's float math is basic operations rounded once each (no libm,
    # no fused multiply-add; tests/ops/test_sampling_ptx.py checks the compiled kernel), as in the CPU twin.
    import torch

    x = mixed_logits(3, vocab=151_936)  # a real vocabulary: many blocks' worth of strided reads per row
    got = sample(torch.from_numpy(x).cuda(), seed=3, **MIXED).cpu().numpy()
    np.testing.assert_array_equal(got, sample(x, seed=3, **MIXED))
    # Many rows drawn at temperature 1 from near-ties: any last-bit difference in the noise would show here.
    ties = np.random.default_rng(4).standard_normal((64, 151_936)).astype(np.float32) * 1e-3
    offsets = np.arange(64)
    got = sample(torch.from_numpy(ties).cuda(), temperature=1.0, top_p=0.95, seed=11, offsets=offsets)
    np.testing.assert_array_equal(got.cpu().numpy(), sample(ties, temperature=1.0, top_p=0.95, seed=11,
                                                            offsets=offsets))


def test_empty_batch():
    assert sample(np.zeros((0, 10), np.float32), temperature=1.0).shape == (0,)


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(temperature=[1.0]), "temperature must be a number or .batch=2"),
    (dict(top_k=-2), "top_k must be >= 0"),
    (dict(top_p=0.0), "top_p must be in"),
    (dict(top_p=float("nan")), "top_p must be finite"),
    (dict(seed=-1), "seed must be an int"),
    (dict(offsets=[1, -1]), "offsets must be"),
    (dict(banned=[10]), "banned ids must be in"),
    (dict(banned=list(range(10)), ban_rows=True), "excludes every token"),
    (dict(device="tpu"), "device must be one of"),
    (dict(device="cuda"), "needs logits as a torch CUDA tensor"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(KernelArgumentError, match=message):
        sample(np.zeros((2, 10), np.float32), **kwargs)


def test_bad_logits_are_named():
    with pytest.raises(KernelArgumentError, match="logits must be float32"):
        sample(np.zeros((2, 10), np.float64))
    with pytest.raises(KernelArgumentError, match="logits must be C-contiguous"):
        sample(np.zeros((10, 2), np.float32).T)
    with pytest.raises(KernelArgumentError, match="NaN or \\+inf"):
        sample(np.full((1, 3), np.nan, np.float32))
    dead = np.full((2, 3), -np.inf, np.float32)
    dead[0, 1] = 0.0
    with pytest.raises(KernelArgumentError, match="rows \\[1\\] have no finite allowed logit"):
        sample(dead)
    with pytest.raises(KernelArgumentError, match="rows \\[0\\] have no finite allowed logit"):
        sample(dead[:1].copy(), banned=[1], ban_rows=True)
