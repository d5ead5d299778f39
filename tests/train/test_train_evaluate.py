"""Evaluation through Engine on a CreativePair directory, and the training CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from c4u_engine.data import load_pairs, write_pairs
from c4u_engine.data.creative_pair import GROUPS_FILE
from c4u_engine.errors import InvalidInputError
from c4u_engine.train.__main__ import main
from c4u_engine.train.evaluate import PAIR_METRICS, evaluate, format_report


@pytest.fixture(scope="module")
def four_pairs(train_data, tmp_path_factory):
    """A directory with 4 pairs in pairs.jsonl (no split files) and the dataset's 2 groups."""
    out = tmp_path_factory.mktemp("eval_data")
    shutil.copytree(train_data / "images", out / "images")
    moved = [replace(r, image_a=out / "images" / r.image_a.name, image_b=out / "images" / r.image_b.name)
             for r in load_pairs(train_data)[:4]]
    write_pairs(out / "pairs.jsonl", moved)
    shutil.copyfile(train_data / GROUPS_FILE, out / GROUPS_FILE)
    return out


def test_evaluate_reports_every_metric_for_every_mode(tiny_train_ckpt, four_pairs):
    report = evaluate(tiny_train_ckpt, four_pairs, split=None, max_new_tokens=6)
    assert report["pairs"] == 4 and report["groups"] == 2
    for mode in ("fast", "reason", "hybrid"):
        metrics = report[mode]
        assert set(metrics) == {*PAIR_METRICS, "group_accuracy", "seconds"}
        for name in (*PAIR_METRICS, "group_accuracy"):
            assert 0.0 <= metrics[name] <= 1.0, (mode, name)
        assert metrics["accuracy"] == pytest.approx(
            (metrics["accuracy_original_order"] + metrics["accuracy_swapped_order"]) / 2)
    assert report["fast"]["unparsed"] == 0.0  # fast mode always answers
    assert report["reason"]["unparsed"] == 1.0  # 6 tokens of an untrained model never close <answer>
    table = format_report(report)
    assert "order_consistency" in table and "hybrid" in table


def test_evaluate_checks_its_arguments(tiny_train_ckpt, four_pairs):
    with pytest.raises(InvalidInputError, match="modes"):
        evaluate(tiny_train_ckpt, four_pairs, split=None, modes=["slow"])


def test_cli_tokenizer_sft_eval(train_data, tmp_path, capsys):
    tok = tmp_path / "tok.json"
    assert main(["tokenizer", "--data", str(train_data), "--out", str(tok), "--vocab-size", "600"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 256
    out = tmp_path / "sft"
    argv = ["sft", "--data", str(train_data), "--out", str(out), "--tokenizer", str(tok), "--max-steps", "1",
            "--batch-size", "2", "--max-pairs", "1", "--quiet"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert main(argv) == 2  # states exist and no --resume: a typed error, exit status 2
    assert "resume" in capsys.readouterr().err
    assert main(["eval", "--model", str(out), "--data", str(train_data), "--modes", "fast", "--max-pairs", "2",
                 "--max-groups", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["fast"]["accuracy"] is not None
