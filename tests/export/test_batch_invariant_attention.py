"""Batch-invariant attention (export/attention.py): the same math as the fused softmax, a row's logits bit for bit the
same wherever its keys sit in a padded batch, int8 selections alone and batched exactly equal, the manifest's claim
checked against the graphs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.errors import EngineArtifactError
from c4u_engine.runners.engine_dir import load_engine_dir
from export.attention import grouped_sdpa, grouped_sdpa_segments
from export.onnx_export import export_engine

PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def engines(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint's fp32 engine both ways and an int8 engine with the default (invariant) attention."""
    root = tmp_path_factory.mktemp("invariant")
    ckpt = shutil.copytree(tiny_ckpt, root / "ckpt")
    export_engine(ckpt, root / "fused", log=_quiet)
    export_engine(ckpt, root / "invariant", batch_invariant=True, log=_quiet)
    export_engine(ckpt, root / "int8", precision="int8", log=_quiet)
    return root


def test_invariant_attention_computes_the_fused_softmax():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 16, generator=gen)
    k, v = torch.randn(2, 2, 9, 16, generator=gen), torch.randn(2, 2, 9, 16, generator=gen)
    mask = torch.rand(2, 1, 5, 9, generator=gen) > 0.3
    mask[..., 0] = True
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    for invariant in (False, True):
        torch.testing.assert_close(grouped_sdpa(q, k, v, mask, batch_invariant=invariant), want)
        split = grouped_sdpa_segments(q, (k[:, :, :4], k[:, :, 4:]), (v[:, :, :4], v[:, :, 4:]), mask,
                                      batch_invariant=invariant)
        torch.testing.assert_close(split, want)
    # scores far above exp's float32 range stay finite: the row max comes off first
    big = grouped_sdpa(q * 1e3, k, v, mask, batch_invariant=True)
    assert torch.isfinite(big).all()


def _row_feeds(engine_dir, rng, pad_frozen: int, pad_past: int):
    """One row (3 frozen, 2 past, 5 new slots) alone, and the same row beside a full row in a batch whose frozen
    and past segments are longer by pad_frozen / pad_past masked slots (as a batch padded to a longer request)."""
    cfg = load_engine_dir(engine_dir, verify_hashes=False).config.text
    f, p, s, heads, dim = 3, 2, 5, cfg.num_key_value_heads, cfg.head_dim
    embeds = rng.standard_normal((1, s, cfg.hidden_size), np.float32)
    positions = np.broadcast_to(np.arange(f + p, f + p + s), (3, 1, s)).astype(np.int64)
    cache = {f"{seg}_{kind}_{i}": rng.standard_normal((1, heads, n, dim), np.float32)
             for i in range(cfg.num_hidden_layers) for kind in ("key", "value")
             for seg, n in (("frozen", f), ("past", p))}
    alone = {"inputs_embeds": embeds, "position_ids": positions, "attention_mask": np.ones((1, f + p + s), bool),
             "logits_index": np.array([[s - 1]]), **cache}
    F2, P2 = f + pad_frozen, p + pad_past
    mask = np.ones((2, F2 + P2 + s), bool)
    mask[0, f:F2] = mask[0, F2 + p:F2 + P2] = False
    batched = {"inputs_embeds": np.concatenate([embeds, rng.standard_normal(embeds.shape, np.float32)]),
               "position_ids": np.concatenate([positions, positions + 7], axis=1), "attention_mask": mask,
               "logits_index": np.array([[s - 1], [s - 1]])}
    for name, t in cache.items():
        n = F2 if name.startswith("frozen") else P2
        other = rng.standard_normal((1, heads, n, dim), np.float32)
        padded = np.zeros_like(other)
        padded[:, :, : t.shape[2]] = t
        batched[name] = np.concatenate([padded, other])
    return alone, batched


def test_a_rows_logits_do_not_depend_on_the_padding_around_it(engines):
    """Graph level, fp32: the invariant export gives the row alone and the row in a padded batch bit for bit the
    same logits; the fused softmax (sums in SIMD lanes, so by offset) does not always, which is what made int8
    drift."""
    sessions = {sub: ort.InferenceSession(str(engines / sub / "decoder.onnx")) for sub in ("fused", "invariant")}
    differs = {sub: 0 for sub in sessions}
    for pad_frozen, pad_past in ((13, 7), (1, 30), (61, 0), (5, 5)):
        alone, batched = _row_feeds(engines / "fused", np.random.default_rng(pad_frozen * 100 + pad_past),
                                    pad_frozen, pad_past)
        for sub, session in sessions.items():
            one, many = session.run(None, alone)[0][0], session.run(None, batched)[0][0]
            np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)
            differs[sub] += not np.array_equal(many, one)
    assert differs["invariant"] == 0 and differs["fused"] >= 2, differs


def test_invariant_engine_selects_as_the_fused_one(engines):
    """End to end, fp32: prefill (empty frozen and past segments), comparisons and decoding through the invariant
    graphs give the fused graphs' P(A) and texts."""
    images = [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(84, 56, 9)]
    for options in ({}, {"mode": "reason", "max_new_tokens": 16}):
        ours, theirs = (Engine(engines / sub).select(images, PROFILE, strategy="round_robin", use_cache=False,
                                                     **options) for sub in ("invariant", "fused"))
        assert [c.raw_text for c in ours.comparisons] == [c.raw_text for c in theirs.comparisons]
        assert max(abs(a.prob_a - b.prob_a) for a, b in zip(ours.comparisons, theirs.comparisons)) < 1e-5


def test_int8_selections_alone_and_batched_are_equal(engines):
    """Engine level: requests alone (every cache off) vs 8 clients at once on one int8 engine (the export default:
    invariant attention): every P(A) and text exactly equal, fast and reason (what the per-step logits test below
    holds at the decode batch's level)."""
    from tests.engine.test_concurrency import MAX_NEW, requests, run_clients

    assert load_engine_dir(engines / "int8").batch_invariant
    pool = [make_test_image(56, 56, seed=s) for s in range(6)] + [make_test_image(84, 56, 21)]
    reqs = requests(pool, 8)
    for options in ({}, {"mode": "reason"}):
        alone_engine = Engine(engines / "int8", encoder_cache_bytes=0, prefix_cache_bytes=0)
        alone = [alone_engine.select(im, p, strategy="round_robin", use_cache=False, max_new_tokens=MAX_NEW, **options)
                 for im, p in reqs]
        alone_engine.close()
        engine = Engine(engines / "int8")
        got = run_clients(engine, reqs, 8, strategy="round_robin", **options)
        engine.close()
        for g, ref in zip(got, alone):  # texts too: a random tiny model's reasoning P(A) comes from no answer
            assert [(c.first, c.second, c.prob_a, c.raw_text) for c in g.comparisons] == \
                [(c.first, c.second, c.prob_a, c.raw_text) for c in ref.comparisons]


def _decode_logits(runner, prompts: list[np.ndarray], joins: dict[int, list[int]], new_tokens: int) -> dict:
    """Every row's logits at every step of one decode batch that rows join at the given steps (several at once are
    right-padded to the longest, as the scheduler's prefill batches are)."""
    from c4u_engine.engine.decode_batch import DecodeBatch, DecodeRow
    from c4u_engine.engine.sampling import Sampler, SamplingParams

    seen: dict[int, list[np.ndarray]] = {}
    batch = DecodeBatch(runner, eos_ids=[], before_sample=lambda row, logits: seen[row.owner].append(logits.copy()))
    step = 0
    while step == 0 or len(batch):
        for r in joins.get(step, []):
            seen[r] = []
        rows = joins.get(step, [])
        if rows:
            kvs, logits = [], []
            for r in rows:  # each prompt prefilled alone: the same KV whatever joins with it
                n = len(prompts[r])
                out, kv = runner.forward(runner.embed(prompts[r][None], []), np.broadcast_to(np.arange(n), (3, 1, n)),
                                         None, np.ones((1, n), bool), np.array([[n - 1]]))
                kvs.append(kv)
                logits.append(out[0, 0])
            width = max(len(prompts[r]) for r in rows)
            mask = np.zeros((len(rows), width), bool)
            for i, r in enumerate(rows):
                mask[i, : len(prompts[r])] = True
            batch.join([DecodeRow(r, Sampler(SamplingParams()), new_tokens) for r in rows], runner.kv_stack(kvs, width),
                       mask, np.stack(logits), np.array([len(prompts[r]) for r in rows]))
        batch.step()
        step += 1
    return seen


def test_long_decoding_alone_and_batched_is_bit_for_bit_equal(engines, monkeypatch):
    """Decode batch level, int8 (invariant attention): rows of different prompt lengths decoding 40 tokens each alone
    vs in one batch that others join at other steps (right-padded joins, merges, rows leaving, the packed cache
    growing every 4 slots): every row's logits at every step bit for bit equal (runners/decode_kv.py)."""
    from c4u_engine.runners import decode_kv
    from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner

    monkeypatch.setattr(decode_kv, "GROW_SLOTS", 4)
    runner = OnnxRuntimeRunner(engines / "int8", intra_op_threads=1)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 300, size=n) for n in (9, 23, 5, 17, 12, 30)]
    alone = {}
    for r in range(len(prompts)):
        alone.update(_decode_logits(runner, prompts, {0: [r]}, 40))
    batched = _decode_logits(runner, prompts, {0: [0, 1], 3: [2], 4: [3, 4], 9: [5]}, 40)
    for r in range(len(prompts)):
        assert len(batched[r]) == len(alone[r]) == 40
        for step, (a, b) in enumerate(zip(alone[r], batched[r])):
            assert np.array_equal(a, b), f"row {r}, step {step}: max |d logits| {np.abs(a - b).max():.2e}"


def test_manifest_claim_is_checked_against_the_graphs(engines, tmp_path):
    assert not load_engine_dir(engines / "fused").batch_invariant
    assert load_engine_dir(engines / "invariant").batch_invariant
    liar = shutil.copytree(engines / "fused", tmp_path / "liar")
    manifest = json.loads((liar / "manifest.json").read_text())
    manifest["batch_invariant"] = True
    (liar / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineArtifactError, match="batch_invariant.*Softmax"):
        load_engine_dir(liar)
    manifest["batch_invariant"] = "yes"
    (liar / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineArtifactError, match="'batch_invariant' must be true or false"):
        load_engine_dir(liar)


def test_cli_flag_and_defaults(tiny_ckpt, tmp_path):
    from export.__main__ import main

    ckpt = shutil.copytree(tiny_ckpt, tmp_path / "ckpt")
    assert main([str(ckpt), "--out", str(tmp_path / "bi"), "--batch-invariant", "--no-check-tensorrt"]) == 0
    assert load_engine_dir(tmp_path / "bi").batch_invariant
    assert main([str(ckpt), "--out", str(tmp_path / "q"), "--precision", "int8", "--no-batch-invariant",
                 "--no-smoothing"]) == 0
    assert not load_engine_dir(tmp_path / "q").batch_invariant
