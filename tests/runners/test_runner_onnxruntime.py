"""OnnxRuntimeRunner against the torch reference runner on exported tiny checkpoints, its refusals of broken
engine directories, and its torch-free runtime path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[2]))  # `import export` (a repo-level package, not installed)

from engine_files import edit_manifest  # noqa: E402
from tiny_checkpoint import make_test_image  # noqa: E402

from c4u_engine.api import Engine  # noqa: E402
from c4u_engine.errors import (BackendUnavailableError, EngineArtifactError, InvalidInputError,  # noqa: E402
                               UnsupportedModelError)
from c4u_engine.runners import create_runner, onnxruntime_runner  # noqa: E402
from c4u_engine.runners.decode_kv import DecodeKV  # noqa: E402
from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner, OrtKV, tensorrt_ep_options  # noqa: E402
from c4u_engine.runners.base import split_by_budget  # noqa: E402
from c4u_engine.runners.torch_runner import TorchKV, TorchRunner  # noqa: E402
from export.onnx_export import export_engine  # noqa: E402

TOL = 1e-4
PROFILE = {"title": "Trail running shoes", "queries": ["waterproof shoes", "running sale"]}
VARIANTS = {
    "gqa": {},  # 4 query heads on 2 KV heads, mrope [2, 3, 3], 56-pixel windows, block 1 full attention
    "one_kv_head_tied": dict(text=dict(num_key_value_heads=1), tie_word_embeddings=True,
                             vision=dict(window_size=112, fullatt_block_indexes=[0])),
    "mha_wide_heads": dict(text=dict(hidden_size=96, num_attention_heads=3, num_key_value_heads=3, num_hidden_layers=3,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                      "mrope_section": [4, 6, 6]}),
                           vision=dict(num_heads=4, window_size=28, depth=3, fullatt_block_indexes=[0, 2])),
}


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def pairs(tiny_ckpt_factory, tmp_path_factory):
    """variant -> (torch runner, onnxruntime runner), each export written outside the shared checkpoint."""
    out = {}
    for name, kwargs in VARIANTS.items():
        ckpt = tiny_ckpt_factory(**kwargs)
        engine = export_engine(ckpt, tmp_path_factory.mktemp(f"ort_{name}") / "engine", log=_quiet).out_dir
        out[name] = (TorchRunner(ckpt), OnnxRuntimeRunner(engine))
    return out


@pytest.fixture(scope="module")
def ckpt_with_export(tiny_ckpt, tmp_path_factory):
    """A private copy of the default checkpoint with its export in the default place (<ckpt>/onnx)."""
    ckpt = tmp_path_factory.mktemp("ort_default") / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    export_engine(ckpt, log=_quiet)
    return ckpt


def _close(a, b, what: str) -> None:
    b = b.float().numpy() if hasattr(b, "numpy") else np.asarray(b)
    assert a.shape == b.shape, what
    err = float(np.abs(np.asarray(a, np.float32) - b).max()) if a.size else 0.0
    assert err <= TOL, f"{what}: max abs difference {err}"


def _close_kv(ort_kv, torch_kv, what: str) -> None:
    n = torch_kv.length  # the torch runner's buffers may hold spare capacity after the filled slots
    ort_kv = ort_kv.joined()  # (frozen segment, then past) as one
    for i, (k, v) in enumerate(zip(ort_kv.keys, ort_kv.values)):
        _close(k, torch_kv.keys[i][:, :, :n], f"{what} key {i}")
        _close(v, torch_kv.values[i][:, :, :n], f"{what} value {i}")


@pytest.mark.parametrize("group_patches", [2048, 80])  # 80: the 3-image call runs as [image 0], [images 1, 2]
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vision_embeddings_match_torch_for_odd_grids(pairs, variant, group_patches, monkeypatch):
    monkeypatch.setattr(onnxruntime_runner, "VISION_GROUP_PATCHES", group_patches)
    ref, ort_runner = pairs[variant]
    rng = np.random.default_rng(1)
    for grid in ([[1, 2, 2]], [[1, 6, 10], [1, 14, 4], [2, 2, 6]], [[1, 10, 10]]):
        grid = np.array(grid)
        pixels = rng.standard_normal((int(np.prod(grid, axis=1).sum()), 1176)).astype(np.float32)
        ours, theirs = ort_runner.encode_images(pixels, grid), ref.encode_images(pixels, grid)
        assert len(ours) == len(grid)
        for a, b in zip(ours, theirs):
            _close(a, b, f"vision {variant} grid {grid.tolist()}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_decode_and_prefix_reuse_match_torch(pairs, variant):
    ref, ours = pairs[variant]
    rng = np.random.default_rng(2)
    grid = np.array([[1, 4, 6]])
    pixels = rng.standard_normal((24, 1176)).astype(np.float32)
    img_o, img_t = ours.encode_images(pixels, grid), ref.encode_images(pixels, grid)
    ids = rng.integers(0, 400, size=(2, 17))
    ids[0, 4:10] = ours.image_token_id  # one image's 6 tokens in row 0
    pos = np.broadcast_to(np.arange(17), (3, 2, 17)).copy()
    mask = np.ones((2, 17), bool)
    mask[1, :3] = False  # left padding in row 1
    index = np.array([[16, 9], [16, 3]])
    emb_o, emb_t = ours.embed(ids, img_o), ref.embed(ids, img_t)
    _close(emb_o, emb_t, "embed with image")
    logits_o, kv_o = ours.forward(emb_o, pos, None, mask, index)
    logits_t, kv_t = ref.forward(emb_t, pos, None, mask, index)
    _close(logits_o, logits_t, "prefill logits")
    _close_kv(kv_o, kv_t, "prefill")

    # a decode step on the whole batch, then a multi-token step on rows picked, repeated and cut (prefix reuse)
    step = rng.integers(0, 400, size=(2, 1))
    mask2 = np.concatenate([mask, np.ones((2, 1), bool)], axis=1)
    pos2 = np.full((3, 2, 1), 17)
    out_o, kv_o = ours.forward(ours.embed(step, []), pos2, kv_o, mask2, np.zeros((2, 1), np.int64))
    out_t, kv_t = ref.forward(ref.embed(step, []), pos2, kv_t, mask2, np.zeros((2, 1), np.int64))
    _close(out_o, out_t, "decode logits")
    rows, cut = [1, 0, 1], 12
    sel_o, sel_t = ours.kv_select(kv_o, rows, length=cut), ref.kv_select(kv_t, rows, length=cut)
    assert all(k.flags["C_CONTIGUOUS"] for k in sel_o.keys) and ours.kv_length(sel_o) == cut
    _close_kv(sel_o, sel_t, "kv_select")
    more = rng.integers(0, 400, size=(3, 4))
    mask3 = np.concatenate([mask2[rows, :cut], np.ones((3, 4), bool)], axis=1)
    pos3 = np.broadcast_to(np.arange(cut, cut + 4), (3, 3, 4)).copy()
    out_o, _ = ours.forward(ours.embed(more, []), pos3, sel_o, mask3, np.array([[3], [1], [0]]))
    out_t, _ = ref.forward(ref.embed(more, []), pos3, sel_t, mask3, np.array([[3], [1], [0]]))
    _close(out_o, out_t, "prefill after a selected prefix")


def test_vision_groups_split_at_the_patch_budget():
    groups = split_by_budget(np.array([60, 56, 24, 100, 4]), 80)
    assert [(g.start, g.stop) for g in groups] == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert [(g.start, g.stop) for g in split_by_budget(np.array([4, 4]), 80)] == [(0, 2)]


def test_kv_stack_pads_with_zeros_like_torch(pairs):
    ref, ours = pairs["gqa"]
    rng = np.random.default_rng(3)
    lengths = [5, 2, 7]
    arrays = [[rng.standard_normal((1, 2, n, 16)).astype(np.float32) for _ in range(4)] for n in lengths]
    kv_o = [OrtKV(a[0::2], a[1::2]) for a in arrays]
    kv_t = [TorchKV([torch.from_numpy(t) for t in a[0::2]], [torch.from_numpy(t) for t in a[1::2]], n)
            for a, n in zip(arrays, lengths)]
    stacked_o, stacked_t = ours.kv_stack(kv_o, 9, reserve=4), ref.kv_stack(kv_t, 9)
    assert ours.kv_length(stacked_o) == ref.kv_length(stacked_t) == 9 and stacked_o.keys[0].shape == (3, 2, 9, 16)
    for a, b in zip(stacked_o.keys + stacked_o.values, stacked_t.keys + stacked_t.values):
        np.testing.assert_array_equal(a, b[:, :, :9].numpy())  # a copy: exact, padding zeros included
    assert ours.kv_nbytes(stacked_o) == 2 * 2 * 3 * 2 * 9 * 16 * 4
    same = ours.kv_select(stacked_o, [0, 1, 2], reserve=3)
    assert same is not stacked_o and all(a is not b for a, b in zip(same.keys, stacked_o.keys))  # always a copy


def test_kv_gather_slots_repacks_live_slots_and_the_next_step_is_unchanged(pairs):
    # A decode batch re-packs its rows' live slots to the front (engine/decode_batch.py): keys carry their rotary
    # embedding, so the next step over the re-packed KV and mask must give the same logits, on both runtimes.
    ref, ours = pairs["gqa"]
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 400, size=(2, 12))
    mask = np.ones((2, 12), bool)
    mask[0, 3:8] = False  # row 0: a hole (padding it was merged with); row 1: padding at its end
    mask[1, 9:] = False
    pos = np.zeros((3, 2, 12), np.int64)
    for r in range(2):
        pos[:, r, mask[r]] = np.arange(mask[r].sum())
    index = np.array([[0, 1, 2, 8, 9, 10, 11, 0, 0], list(range(9))])  # live slots first; row 0's last two: spare
    packed_mask = np.array([[True] * 7 + [False] * 2, [True] * 9])
    step = rng.integers(0, 400, size=(2, 1))
    nxt = np.array([[[7], [9]]] * 3)
    for runner in (ours, ref):
        _, kv = runner.forward(runner.embed(ids, []), pos, None, mask, np.zeros((2, 1), np.int64))
        full, _ = runner.forward(runner.embed(step, []), nxt, kv, np.concatenate([mask, np.ones((2, 1), bool)], 1),
                                 np.zeros((2, 1), np.int64))
        packed = runner.kv_gather_slots(kv, index, reserve=2)
        assert runner.kv_length(packed) == 9
        out, _ = runner.forward(runner.embed(step, []), nxt, packed, np.concatenate([packed_mask, np.ones((2, 1),
                                bool)], 1), np.zeros((2, 1), np.int64))
        np.testing.assert_allclose(out, full, atol=1e-5, rtol=1e-5)


def test_long_decode_folds_the_cache_into_the_frozen_segment_and_matches_torch(pairs, monkeypatch):
    # Each decode step hands its cache over as the frozen segment and copies only the last FOLD_SLOTS slots; past
    # that, the cache is folded. 11 steps with FOLD_SLOTS = 3 cross several folds; every KV operation then works on
    # a KV in two segments as on one.
    monkeypatch.setattr(onnxruntime_runner, "FOLD_SLOTS", 3)
    ref, ours = pairs["gqa"]
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 400, size=(2, 6))
    mask = np.ones((2, 6), bool)
    mask[1, :2] = False
    pos = np.broadcast_to(np.arange(6), (3, 2, 6)).copy()
    kvs, logits, frozen_lengths = {}, {}, []
    for runner in (ours, ref):
        _, kv = runner.forward(runner.embed(ids, []), pos, None, mask, np.zeros((2, 1), np.int64))
        step_mask = mask
        for i in range(11):
            step_mask = np.concatenate([step_mask, np.ones((2, 1), bool)], axis=1)
            tok = np.array([[(7 * i) % 400], [(11 * i + 3) % 400]])
            out, kv = runner.forward(runner.embed(tok, []), np.full((3, 2, 1), 6 + i), kv, step_mask,
                                     np.zeros((2, 1), np.int64))
            logits.setdefault(runner.name, []).append(out)
            if runner is ours:
                frozen_lengths.append(kv.frozen_length)
        kvs[runner.name] = kv
    for i, (a, b) in enumerate(zip(logits["onnxruntime"], logits["torch"])):
        _close(a, b, f"decode step {i}")
    assert frozen_lengths[:6] == [6, 6, 6, 9, 9, 9] and max(frozen_lengths) < 17  # folds every 3 steps
    kv_o, kv_t = kvs["onnxruntime"], kvs["torch"]
    assert ours.kv_length(kv_o) == 17 and kv_o.frozen_length > 0
    _close_kv(kv_o, kv_t, "after 11 steps")
    assert ours.kv_nbytes(kv_o) == ours.kv_nbytes(kv_o.joined()) == 2 * 2 * 2 * 2 * 17 * 16 * 4
    for rows, cut in (([1, 0, 1], None), ([0], 4), ([1, 1], 14)):  # whole, inside the frozen part, inside past
        sel_o, sel_t = ours.kv_select(kv_o, rows, length=cut), ref.kv_select(kv_t, rows, length=cut)
        assert ours.kv_length(sel_o) == (17 if cut is None else cut)
        _close_kv(sel_o, sel_t, f"kv_select {rows} {cut}")
    stacked_o = ours.kv_stack([kv_o, ours.kv_select(kv_o, [0], length=9)], 20)
    stacked_t = ref.kv_stack([kv_t, ref.kv_select(kv_t, [0], length=9)], 20)
    _close_kv(stacked_o, stacked_t, "kv_stack")
    index = np.array([list(range(2, 17)), list(range(0, 15))])
    _close_kv(ours.kv_gather_slots(kv_o, index), ref.kv_gather_slots(kv_t, index), "kv_gather_slots")
    keys, _, length = ours.kv_layers(kv_o)
    assert length == 17 and kv_o.frozen_keys is None and keys[0] is kv_o.keys[0]  # joined, the KV's own buffers
    _close_kv(kv_o, kv_t, "after kv_layers")


def test_decode_kv_packs_rows_and_decodes_as_torch(pairs):
    # The decode batch's KV (Runner.kv_for_decode): each row's live slots packed from slot 0, steps appended in
    # place; the logits are torch's on the engine's layout, and the engine's slot count and mask still rule.
    ref, fused = pairs["gqa"]
    assert not fused.packed_decode  # an fp32 export with the fused softmax keeps the engine's layout
    ours = OnnxRuntimeRunner(fused.engine_dir.path, packed_decode=True)
    rng = np.random.default_rng(8)
    ids = rng.integers(0, 400, size=(2, 6))
    mask = np.ones((2, 6), bool)
    mask[1, 1:3] = False  # a gap, as right-padded prefill rows leave
    pos = np.broadcast_to(np.arange(6), (3, 2, 6)).copy()
    logits = {}
    for runner in (ours, ref):
        _, kv = runner.forward(runner.embed(ids, []), pos, None, mask, np.zeros((2, 1), np.int64))
        kv = runner.kv_for_decode(kv, mask)
        step_mask = mask
        for i in range(5):
            step_mask = np.concatenate([step_mask, np.ones((2, 1), bool)], axis=1)
            tok = np.array([[(5 * i) % 400], [(13 * i + 1) % 400]])
            out, kv = runner.forward(runner.embed(tok, []), np.full((3, 2, 1), 6 + i), kv, step_mask,
                                     np.zeros((2, 1), np.int64))
            logits.setdefault(runner.name, []).append(out)
        assert runner.kv_length(kv) == 11
        if runner is ours:
            assert isinstance(kv, DecodeKV) and kv.lengths.tolist() == [11, 9]
            with pytest.raises(InvalidInputError, match="live slots"):  # the engine's mask must agree
                bad = np.concatenate([step_mask, np.ones((2, 1), bool)], axis=1)
                bad[0, 0] = False
                runner.forward(runner.embed(tok, []), np.full((3, 2, 1), 11), kv, bad, np.zeros((2, 1), np.int64))
            with pytest.raises(InvalidInputError, match="one new token"):
                runner.forward(runner.embed(ids[:, :2], []), np.full((3, 2, 2), 11), kv,
                               np.ones((2, 13), bool), np.zeros((2, 1), np.int64))
            with pytest.raises(InvalidInputError, match="kv_layers"):
                runner.kv_layers(kv)
            with pytest.raises(InvalidInputError, match="decode KVs stack only"):
                runner.kv_stack([kv, OrtKV(kv.keys, kv.values)], 40)
            assert runner.kv_select(kv, [1]).lengths.tolist() == [9]
            with pytest.raises(InvalidInputError, match="selected whole"):
                runner.kv_select(kv, [1], length=4)
            assert runner.kv_nbytes(kv) == sum(t.nbytes for t in kv.keys + kv.values)
    _, prefill_kv = ours.forward(ours.embed(ids, []), pos, None, mask, np.zeros((2, 1), np.int64))
    with pytest.raises(InvalidInputError, match=r"mask must be \[2, 6\]"):
        ours.kv_for_decode(prefill_kv, mask[:, :5])
    for i, (a, b) in enumerate(zip(logits["onnxruntime"], logits["torch"])):
        _close(a, b, f"decode step {i}")


@pytest.fixture(scope="module")
def images():
    return [make_test_image(56, 56, seed=s) for s in range(4)] + [make_test_image(90, 45, 11),
                                                                   make_test_image(40, 70, 12)]


@pytest.mark.parametrize("strategy,mode", [("round_robin", "fast"), ("knockout", "reason")])
def test_engine_select_matches_torch(ckpt_with_export, images, strategy, mode):
    kwargs = dict(strategy=strategy, mode=mode, max_new_tokens=6) if mode == "reason" else dict(strategy=strategy)
    picked = images if mode == "fast" else images[:3]
    ours = Engine(ckpt_with_export, backend="onnxruntime").select(picked, PROFILE, **kwargs)
    theirs = Engine(ckpt_with_export, backend="torch").select(picked, PROFILE, **kwargs)
    assert ours.stats["backend"] == "onnxruntime" and theirs.stats["backend"] == "torch"
    assert ours.winner == theirs.winner and ours.ranking == theirs.ranking
    assert [(c.first, c.second, c.answer) for c in ours.comparisons] == \
        [(c.first, c.second, c.answer) for c in theirs.comparisons]
    for a, b in zip(ours.comparisons, theirs.comparisons):
        assert abs(a.prob_a - b.prob_a) <= TOL
        assert a.raw_text == b.raw_text


def test_auto_picks_onnxruntime_on_cpu_only_when_an_export_exists(ckpt_with_export, tiny_ckpt):
    assert create_runner(ckpt_with_export, backend="auto").name == "onnxruntime"
    assert create_runner(ckpt_with_export / "onnx", backend="auto").name == "onnxruntime"  # the engine dir itself
    assert create_runner(tiny_ckpt, backend="auto").name == "torch"
    with pytest.raises(BackendUnavailableError, match="no exported ONNX"):
        create_runner(tiny_ckpt, backend="onnxruntime")


def test_engine_runs_from_the_engine_directory_alone(ckpt_with_export, images):
    engine = Engine(ckpt_with_export / "onnx")  # tokenizer, template and fingerprint from the export
    assert engine.backend == "onnxruntime"
    reference = Engine(ckpt_with_export, backend="torch")
    a, b = engine.compare(images[0], images[4], PROFILE), reference.compare(images[0], images[4], PROFILE)
    assert a.answer == b.answer and abs(a.prob_a - b.prob_a) <= TOL


def test_runtime_path_never_imports_torch(ckpt_with_export):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from c4u_engine.api import Engine
        from c4u_engine.runners import create_runner
        runner = create_runner({str(ckpt_with_export)!r}, backend="onnxruntime")
        ids = np.arange(1, 9)[None]
        logits, kv = runner.forward(runner.embed(ids, []), np.broadcast_to(np.arange(8), (3, 1, 8)).copy(), None,
                                    np.ones((1, 8), bool), np.array([[7]]))
        runner.encode_images(np.zeros((16, 1176), np.float32), np.array([[1, 4, 4]]))
        pixels = (np.arange(56 * 56 * 3) % 251).astype(np.uint8).reshape(56, 56, 3)
        Engine({str(ckpt_with_export)!r}, backend="onnxruntime").select([pixels, pixels[::-1].copy()], {{"title": "x"}})
        assert logits.shape == (1, 1, runner.vocab_size)
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# -- refusals -------------------------------------------------------------------------------------------
@pytest.fixture
def engine_copy(ckpt_with_export, tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(ckpt_with_export / "onnx", copy)
    return copy


def test_refuses_a_missing_file(engine_copy):
    (engine_copy / "tokenizer.json").unlink()
    with pytest.raises(EngineArtifactError, match="tokenizer.json.*missing"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_a_missing_graph(engine_copy):
    (engine_copy / "vision.onnx").unlink()
    with pytest.raises(EngineArtifactError, match="vision.onnx"):
        OnnxRuntimeRunner(engine_copy)


@pytest.mark.parametrize("file", ["decoder.onnx", "embed_tokens.safetensors"])
def test_refuses_a_changed_byte(engine_copy, file):
    data = bytearray((engine_copy / file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (engine_copy / file).write_bytes(bytes(data))
    with pytest.raises(EngineArtifactError, match=f"{file}: sha256 .* differs"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_another_exporter_format_version(engine_copy):
    edit_manifest(engine_copy, lambda m: m.update(format_version=99))
    with pytest.raises(EngineArtifactError, match="format version 99"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_a_manifest_that_does_not_match_the_graph(engine_copy):
    def widen(manifest):
        manifest["graphs"]["decoder"]["inputs"][0]["shape"] = ["batch", "seq", 65]

    edit_manifest(engine_copy, widen)
    with pytest.raises(EngineArtifactError, match=r"decoder.onnx: graph input inputs_embeds float32\[batch, seq, 64\]"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_a_manifest_that_breaks_the_runner_contract(engine_copy):
    def rename(manifest):
        manifest["graphs"]["decoder"]["outputs"][1]["name"] = "key_cache_0"

    edit_manifest(engine_copy, rename)
    with pytest.raises(EngineArtifactError, match="present_key_0"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_an_unsupported_model_type(engine_copy):
    config = json.loads((engine_copy / "config.json").read_text())
    (engine_copy / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(UnsupportedModelError, match="llava"):
        OnnxRuntimeRunner(engine_copy)


def test_refuses_unreadable_or_absent_manifests(engine_copy, tmp_path):
    (engine_copy / "manifest.json").write_text("{not json")
    with pytest.raises(EngineArtifactError, match="manifest.json: not a readable JSON"):
        OnnxRuntimeRunner(engine_copy)
    with pytest.raises(EngineArtifactError, match="c4u export"):
        OnnxRuntimeRunner(tmp_path / "nowhere")


def test_bfloat16_exports_are_left_to_tensorrt(ckpt_with_export, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt_with_export, ckpt, ignore=shutil.ignore_patterns("onnx"))
    export_engine(ckpt, dtype="bfloat16", log=_quiet)
    with pytest.raises(BackendUnavailableError, match="bfloat16 graphs"):
        OnnxRuntimeRunner(ckpt)
    assert create_runner(ckpt, backend="auto").name == "torch"  # auto moves on to a runtime that can
    with pytest.raises(BackendUnavailableError, match="exported in float32"):
        OnnxRuntimeRunner(ckpt_with_export, dtype="float16")


def test_tensorrt_ep_profile_options_cover_every_profile(pairs):
    options = tensorrt_ep_options(pairs["gqa"][1].engine_dir)
    lo, opt, hi = (dict(item.split(":") for item in options[f"trt_profile_{k}_shapes"].split(","))
                   for k in ("min", "opt", "max"))
    assert lo["past_key_0"] == "1x2x0x16" and hi["past_key_0"] == "64x2x4095x16"  # prefill min, decode max
    assert lo["inputs_embeds"] == "1x1x64" and opt["inputs_embeds"] == "4x512x64"
    assert lo["pixel_patches"] == "4x1176" and set(lo) == set(hi) == set(opt)
