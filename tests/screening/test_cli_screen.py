"""`c4u screen`, and `c4u select --product` with its HTML report, on a tiny screening model."""

from __future__ import annotations

import json

import numpy as np

from c4u_engine.cli import main
from c4u_engine.data.usability import sample
from c4u_engine.screening import Screener


def _files(tmp_path, n=3):
    samples = [sample(21, i) for i in range(n)]
    paths = []
    for i, s in enumerate(samples):
        paths.append(str(tmp_path / f"ad{i}.png"))
        s.generated.save(paths[-1])
    product = tmp_path / "cutout.png"
    samples[0].product.save(product)
    return paths, str(product), samples[0].text


def test_screen_json(tiny_screen_dir, tmp_path, capsys):
    paths, product, title = _files(tmp_path)
    assert main(["screen", *paths, "--product", product, "--title", title, "--model", str(tiny_screen_dir),
                 "--threshold", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = Screener(tiny_screen_dir).probabilities([sample(21, i).generated for i in range(3)], title,
                                                   sample(21, 0).product)
    assert out["mode"] == "image+product+text" and out["threshold"] == 0.3 and out["reject_below"] == 0.3
    assert [r["image"] for r in out["results"]] == paths
    for r, p in zip(out["results"], want):
        assert abs(r["p_available"] - float(p[0])) < 1e-3  # PNG round trip of the same pixels
        assert r["usable"] == (r["p_available"] >= 0.3)


def test_screen_text_mode_and_errors(tiny_screen_dir, tmp_path, capsys):
    paths, _, title = _files(tmp_path, 1)
    assert main(["screen", *paths, "--title", title, "--model", str(tiny_screen_dir)]) == 0
    assert "image+text (weaker" in capsys.readouterr().out
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["screen", *paths, "--product", str(bad), "--title", title, "--model", str(tiny_screen_dir)]) == 2
    assert "ProductImageError" in capsys.readouterr().err
    assert main(["screen", *paths, "--title", title, "--model", str(tmp_path)]) == 2
    assert "ScreeningModelError" in capsys.readouterr().err


def test_select_with_product_reports_the_screened_out(tiny_ckpt, tiny_screen_dir, tmp_path, capsys):
    paths, product, title = _files(tmp_path, 4)
    p = Screener(tiny_screen_dir).probabilities([sample(21, i).generated for i in range(4)], title,
                                                sample(21, 0).product)[:, 0]
    worst = int(np.argmin(p))
    threshold = float(np.sort(p)[:2].mean())
    report = tmp_path / "report.html"
    assert main(["select", *paths, "--title", title, "--product", product, "--model", str(tiny_ckpt), "--backend",
                 "torch", "--screen-model", str(tiny_screen_dir), "--screen-threshold", str(threshold), "--json",
                 "--report", str(report)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["rejected"]) == [str(worst)] and out["rejected"][str(worst)].startswith("unusable: ")
    html = report.read_text()
    assert "Screened out as unusable (1 of 4)" in html and out["rejected"][str(worst)] in html
    assert html.count("data:image/") >= 5  # the screened-out candidate is shown too


def test_screen_gives_every_file_a_verdict_or_its_own_error(tiny_screen_dir, tmp_path, capsys):
    paths, product, title = _files(tmp_path, 3)
    corrupt, missing = tmp_path / "corrupt.png", str(tmp_path / "missing.png")
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files = [paths[0], str(corrupt), paths[1], missing, paths[2]]
    assert main(["screen", *files, "--product", product, "--title", title, "--model", str(tiny_screen_dir),
                 "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)["results"]
    assert [r["image"] for r in results] == files
    assert [("error" in r) for r in results] == [False, True, False, True, False]
    assert "InvalidImageError" in results[1]["error"] and "cannot" in results[1]["error"]
    assert {r["status"] for r in results if "error" not in r} <= {"usable", "uncertain", "unusable"}
    assert "2 of 5 image(s) could not be judged" in captured.err
    assert main(["screen", *files, "--product", product, "--title", title, "--model", str(tiny_screen_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split(": ")[0] for line in lines] == files and lines[1].startswith(f"{corrupt}: error: ")
    # nothing judged: a failure
    assert main(["screen", str(corrupt), missing, "--title", title, "--model", str(tiny_screen_dir)]) == 2
