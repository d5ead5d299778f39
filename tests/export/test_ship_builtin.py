"""The release step that puts a trained checkpoint into the package: safetensors only, ONNX graphs, a model card."""

from __future__ import annotations

import json
import shutil

from export.ship_builtin import main

_REPORT = {"pairs": 3, "groups": 1, "fast": {"accuracy": 0.5, "order_consistency": 1.0, "group_accuracy": 1.0},
           "reason": {"accuracy": 0.25, "order_consistency": 0.5, "group_accuracy": None}}


def test_ship_copies_exports_and_writes_the_card(tiny_ckpt, tmp_path):
    (tmp_path / "sft.json").write_text(json.dumps(_REPORT))
    (tmp_path / "grpo.json").write_text(json.dumps({**_REPORT, "fast": {**_REPORT["fast"], "accuracy": 0.75}}))
    (tmp_path / "notes.md").write_text("## Status\nMeasured on the test split.\n")
    dest = tmp_path / "builtin"
    assert main([str(tiny_ckpt), "--dest", str(dest), "--eval-sft", str(tmp_path / "sft.json"),
                 "--eval-grpo", str(tmp_path / "grpo.json"), "--recipe", "RECIPE-LINE",
                 "--notes", str(tmp_path / "notes.md")]) == 0
    assert (dest / "model.safetensors").is_file() and (dest / "onnx").is_dir() and (dest / "onnx-int8").is_dir()
    card = (dest / "MODEL_CARD.md").read_text()
    assert "RECIPE-LINE" in card and card.rstrip().endswith("Measured on the test split.")
    assert "| SFT | fast | 50.0% |" in card and "| SFT + GRPO (shipped) | fast | 75.0% |" in card
    assert "| SFT | reason | 25.0% |" in card


def test_ship_adds_named_rows_in_order_and_checks_them_first(tiny_ckpt, tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(_REPORT))
    dest = tmp_path / "builtin"
    assert main([str(tiny_ckpt), "--dest", str(dest), "--eval-sft", str(tmp_path / "r.json"),
                 "--eval", f"previous release={tmp_path / 'r.json'}", "--eval-grpo", str(tmp_path / "r.json")]) == 0
    card = (dest / "MODEL_CARD.md").read_text()
    assert card.index("| SFT | fast") < card.index("| previous release | fast") < card.index("| SFT + GRPO (shipped)")
    (tmp_path / "bad.json").write_text("[1, 2]")
    for entry, message in (("no-equals-sign", "expected NAME=PATH"), (f"x={tmp_path / 'bad.json'}", "JSON object"),
                           (f"x={tmp_path / 'missing.json'}", "cannot read it")):
        (dest / "keep.txt").write_text("previous release")
        assert main([str(tiny_ckpt), "--dest", str(dest), "--eval", entry]) == 2
        assert message in capsys.readouterr().err and (dest / "keep.txt").is_file()


def test_ship_refuses_pickle_files(tiny_ckpt, tmp_path, capsys):
    src = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, src)
    (src / "pytorch_model.bin").write_bytes(b"not shipped")
    assert main([str(src), "--dest", str(tmp_path / "builtin")]) == 2
    assert "refusing to ship pickle files ['pytorch_model.bin']" in capsys.readouterr().err


def test_ship_refuses_unreadable_notes_before_touching_dest(tiny_ckpt, tmp_path, capsys):
    dest = tmp_path / "builtin"
    dest.mkdir()
    (dest / "keep.txt").write_text("previous release")
    assert main([str(tiny_ckpt), "--dest", str(dest), "--notes", str(tmp_path / "missing.md")]) == 2
    err = capsys.readouterr().err
    assert "--notes" in err and "missing.md: cannot read it" in err
    assert (dest / "keep.txt").read_text() == "previous release"
