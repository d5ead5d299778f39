"""The `c4u` command line: info, select (JSON and HTML report), eval, and typed errors as exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from tiny_checkpoint import make_test_image

from c4u_engine.cli import main


def _images(tmp_path, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"c{i}.png"
        Image.fromarray(make_test_image(56, 56, seed=i)).save(p)
        paths.append(str(p))
    return paths


def test_info_reports_native_build_and_runtimes(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["native"]["built"] is True
    assert set(info["runtimes"]) == {"torch", "onnxruntime", "tensorrt"}
    if info["native"]["cuda_kernels"]:
        assert "80" in info["native"]["cuda_archs"] and "90" in info["native"]["cuda_archs"]


def test_select_json_and_html_report(tiny_ckpt, tmp_path, capsys):
    paths = _images(tmp_path) + [str(tmp_path / "missing.png")]
    report = tmp_path / "report.html"
    code = main(["select", *paths, "--title", "Trail shoes", "--query", "running sale", "--model", str(tiny_ckpt),
                 "--backend", "torch", "--strategy", "round_robin", "--json", "--report", str(report)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["ranking"]) == [0, 1, 2] and "3" in out["rejected"]
    html = report.read_text()
    assert html.count("data:image/") >= 3 and "http://" not in html and "https://" not in html


def test_select_top_k_and_orders(tiny_ckpt, tmp_path, capsys):
    paths = _images(tmp_path, 5)
    base = ["select", *paths, "--title", "Trail shoes", "--model", str(tiny_ckpt), "--backend", "torch", "--json"]
    assert main([*base, "--top-k", "2", "--orders", "adaptive"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stats"]["top_k"] == 2 and out["stats"]["orders"] == "adaptive"
    assert sorted(out["ranking"]) == list(range(5))
    assert out["stats"]["comparisons"] + out["stats"]["comparisons_saved"] == 2 * ((5 - 4) + 6)  # 2k = 4 finalists
    assert main([*base, "--one-order"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["orders"] == "one"
    for bad in (["--one-order", "--orders", "both"], ["--top-k", "0"]):
        assert main([*base, *bad]) == 2
        assert "InvalidInputError" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main([*base, "--orders", "sometimes"])


def test_typed_errors_exit_2(tiny_ckpt, tmp_path, capsys):
    code = main(["select", *_images(tmp_path, 2), "--title", "x", "--model", str(tmp_path / "nope")])
    assert code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--precision", "int8"], ["--backend", "onnxruntime"]])
def test_a_model_folder_without_config_json_is_named_as_such(tmp_path, capsys, extra):
    folder = tmp_path / "not_a_checkpoint"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    assert main(["select", *_images(tmp_path, 2), "--title", "x", "--model", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert "ModelFormatError" in err and "is not a checkpoint: no config.json" in err
    assert "holds no exported" not in err


def test_select_text_names_the_files_and_says_what_the_numbers_are(tiny_ckpt, tmp_path, capsys):
    paths = _images(tmp_path)
    assert main(["select", *paths, "--title", "Trail shoes", "--model", str(tiny_ckpt), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"winner: {paths[0][:-6]}") and "(won " in out.splitlines()[0]
    for p in paths:
        assert f"{p} (#" in out
    assert "mean P" in out and "opponents beaten of those met" in out
    assert "fast mode judges by answer probabilities only" in out and "--mode hybrid" in out


SUBCOMMANDS_WRITING_TO_STDOUT = [["info", "--json"], ["select", "--help"], ["screen", "--help"], ["demo", "--help"],
                                 ["serve", "--help"], ["eval", "--help"], ["export", "--help"], ["--help"]]


@pytest.mark.parametrize("argv", SUBCOMMANDS_WRITING_TO_STDOUT, ids=lambda a: " ".join(a))
def test_a_closed_pipe_is_no_traceback(argv):
    # `c4u ... | head`: the reader is gone before c4u writes
    proc = subprocess.Popen([sys.executable, "-m", "c4u_engine.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode in (0, 1)


def test_screen_json_into_a_closed_pipe_is_no_traceback(tmp_path):
    paths = _images(tmp_path, 2)
    proc = subprocess.Popen([sys.executable, "-m", "c4u_engine.cli", "screen", *paths, "--title", "shoes", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_eval_on_a_creative_pair_directory(tiny_ckpt, tmp_path, capsys):
    from c4u_engine.data.pairs import make_dataset

    data = tmp_path / "data"
    make_dataset(data, 6, seed=1, size=56, n_groups=1, group_size=3, val_fraction=0.0, test_fraction=0.5)
    code = main(["eval", str(data), "--model", str(tiny_ckpt), "--backend", "torch", "--modes", "fast",
                 "--split", "all", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 6 and 0.0 <= report["fast"]["accuracy"] <= 1.0
    # the group's winner, judged again through the API, decides the group accuracy the CLI reports
    from c4u_engine.api import Engine
    from c4u_engine.data.creative_pair import load_groups

    (group,) = load_groups(data)
    sel = Engine(tiny_ckpt, backend="torch").select([str(p) for p in group.images],
                                                    {"title": group.product_title, "queries": list(group.query)},
                                                    use_cache=False)
    assert report["groups"] == 1
    assert report["fast"]["group_accuracy"] == float(sel.winner == group.best)
