"""Perception training: labels come from the generator's specs, only the vision tower moves, learning happens,
resume reproduces the uninterrupted run, non-synthetic data is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from c4u_engine.data import load_pairs
from c4u_engine.data.appeal import is_harmonious, size_class
from c4u_engine.data.creatives import CreativeSpec
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.perception import (
    ATTRIBUTES, AttributeHeads, PerceptionConfig, labelled_images, pad_tokens, run_perception,
)


def _config(data, init, out, **kw) -> PerceptionConfig:
    base = dict(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, save_every=6, val_images=16)
    return PerceptionConfig(str(data), str(init), str(out), **{**base, **kw})


def test_labels_are_the_specs_attributes_one_row_per_distinct_image(train_data):
    paths, labels = labelled_images(str(train_data), "train")
    records = load_pairs(train_data, "train")
    assert len(paths) == len(set(paths)) == labels.shape[0] and labels.shape[1] == len(ATTRIBUTES)
    by_path = {str(r.image_a): r.meta["spec_a"] for r in records} | {str(r.image_b): r.meta["spec_b"] for r in records}
    names = list(ATTRIBUTES)
    for path, row in zip(paths, labels):
        spec = CreativeSpec.from_dict(by_path[path])
        assert row[names.index("price_badge")] == bool(spec.price_tag)
        assert row[names.index("props")] == spec.props
        assert row[names.index("size")] == ("small", "medium", "large").index(size_class(spec.product_scale))
        assert row[names.index("harmony")] == is_harmonious(spec)
        assert all(0 <= v < ATTRIBUTES[n][0] for n, v in zip(names, row))


def test_heads_pool_only_real_tokens():
    torch.manual_seed(0)
    heads = AttributeHeads(8, {"a": 2, "b": 3})
    short, long = torch.randn(3, 8), torch.randn(5, 8)
    tokens, mask = pad_tokens([short, long])
    assert tokens.shape == (2, 5, 8) and mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    padded = heads(tokens, mask)
    alone = heads(short[None], torch.ones(1, 3, dtype=torch.bool))
    for name in ("a", "b"):
        torch.testing.assert_close(padded[name][0], alone[name][0])  # padding changes nothing


def test_perception_trains_the_vision_tower_only_and_learns(train_data, tiny_train_ckpt, tmp_path):
    out = tmp_path / "seen"
    result = run_perception(_config(train_data, tiny_train_ckpt, out), progress=False)
    before, after = load_file(str(tiny_train_ckpt / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("visual.") for k in moved)  # the decoder is untouched
    assert any("merger" in k for k in moved) and any("patch_embed" in k for k in moved)
    log = [json.loads(line) for line in (tmp_path / "seen_state" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert set(result["val_accuracy"]) == set(ATTRIBUTES) and log[-1]["val_split"] == "val"
    assert all(0.0 <= v <= 1.0 for v in result["val_accuracy"].values())


def test_perception_resume_reproduces_the_uninterrupted_run(train_data, tiny_train_ckpt, tmp_path):
    full = tmp_path / "full"
    run_perception(_config(train_data, tiny_train_ckpt, full, val_split=None), progress=False)
    part = tmp_path / "part"
    run_perception(_config(train_data, tiny_train_ckpt, part, val_split=None), progress=False)
    states = sorted((tmp_path / "part_state").glob("step_*.pt"))
    states[-1].unlink()  # as if stopped after the step-6 save
    with pytest.raises(InvalidInputError, match="already holds training states"):
        run_perception(_config(train_data, tiny_train_ckpt, part, val_split=None), progress=False)
    run_perception(_config(train_data, tiny_train_ckpt, part, val_split=None), resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_perception_refuses_data_without_generator_specs(train_data, tiny_train_ckpt, tmp_path):
    data = tmp_path / "real"
    shutil.copytree(train_data, data)
    lines = (data / "train.jsonl").read_text().splitlines()
    stripped = [json.dumps({k: v for k, v in json.loads(line).items() if k != "meta"}) for line in lines]
    (data / "train.jsonl").write_text("\n".join(stripped) + "\n")
    with pytest.raises(InvalidInputError, match="meta.spec_a"):
        run_perception(_config(data, tiny_train_ckpt, tmp_path / "out"), progress=False)


def test_vision_command_line(train_data, tiny_train_ckpt, tmp_path, capsys):
    from c4u_engine.train.__main__ import main

    out = tmp_path / "cli"
    argv = ["vision", "--data", str(train_data), "--init", str(tiny_train_ckpt), "--out", str(out), "--steps", "3",
            "--batch-size", "4", "--val-images", "8", "--quiet"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] == 3 and set(result["val_accuracy"]) == set(ATTRIBUTES)
    assert main(argv) == 2  # states exist: refused without --resume, with the reason
    assert "already holds training states" in capsys.readouterr().err


def test_init_command_writes_a_seeded_random_checkpoint(tokenizer_file, tmp_path, capsys):
    from c4u_engine.train.__main__ import main

    for name in ("a", "b"):
        assert main(["init", "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / name), "--seed", "3"]) == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    assert (tmp_path / "a" / "config.json").is_file() and (tmp_path / "a" / "tokenizer.json").is_file()
    assert main(["init", "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "a")]) == 2
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch_size": 0}, {"val_images": -1}])
def test_perception_refuses_bad_settings_by_name(train_data, tiny_train_ckpt, tmp_path, bad):
    name = next(iter(bad))
    with pytest.raises(InvalidInputError, match=f"{name}={bad[name]}"):
        run_perception(_config(train_data, tiny_train_ckpt, tmp_path / "out", **bad), progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_perception_with_no_held_out_images_reports_none(train_data, tiny_train_ckpt, tmp_path):
    result = run_perception(_config(train_data, tiny_train_ckpt, tmp_path / "out", steps=2, val_images=0),
                            progress=False)
    assert result["val_accuracy"] == {}
