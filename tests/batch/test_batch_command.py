"""`c4u batch`: one record per line (its selection, as Engine.select makes it, or its error), --resume, and Ctrl-C
(a real subprocess: the first SIGINT finishes what is in flight, the second drops it; exit 130 either way; a
--resume afterwards completes the file as an uninterrupted run writes it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from c4u_engine.cli import main

WAIT_S = 240.0  # generous: the box may be loaded; nothing here is timed


def records(path: Path) -> list[dict]:
    """Every line of a results file, parsed (a half or broken line fails here)."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with half a line"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def by_id(recs: list[dict]) -> dict[str, dict]:
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    return {r["id"]: r for r in recs}


def summary_of(out: str) -> dict:
    """The JSON summary line `c4u batch` prints last on stdout."""
    return json.loads(out.strip().splitlines()[-1])


def batch(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main(["batch", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, (summary_of(captured.out) if captured.out.strip() else None), captured.err


def test_every_id_gets_one_record_with_select_s_winner(engine, made_groups, same_selection, tmp_path, capsys):
    groups = made_groups(6)
    out = tmp_path / "out.jsonl"
    code, summary, _ = batch([str(groups.path), "--out", str(out)], capsys)
    assert code == 0
    assert (summary["done"], summary["failed"], summary["skipped"], summary["interrupted"]) == (6, 0, 0, False)
    got = by_id(records(out))
    assert sorted(got) == groups.ids
    for g in groups.groups:
        rec = got[g.id]
        assert "error" not in rec and rec["images"] == g.images
        same_selection(rec, engine.select(g.images, g.profile))


def test_mode_and_strategy_flags_reach_every_selection(engine, made_groups, same_selection, tmp_path, capsys):
    groups = made_groups(6)
    out = tmp_path / "out.jsonl"
    code, summary, _ = batch([str(groups.path), "--out", str(out), "--strategy", "round_robin", "--orders", "one"],
                             capsys)
    assert code == 0 and summary["done"] == 6
    got = by_id(records(out))
    for g in groups.groups[:3]:
        same_selection(got[g.id], engine.select(g.images, g.profile, strategy="round_robin", orders="one"))
        assert got[g.id]["stats"]["strategy"] == "round_robin" and got[g.id]["stats"]["orders"] == "one"


def test_bad_lines_become_error_records_and_the_rest_succeed(engine, made_groups, same_selection, tmp_path,
                                                              capsys):
    groups = made_groups(6)
    g = groups.groups
    (tmp_path / "images").symlink_to(groups.path.parent / "images")  # the made lines' relative paths resolve here
    made_lines = groups.path.read_text(encoding="utf-8").splitlines()
    plain = {"id": "plain", "images": g[1].images, "profile": g[1].profile, "product_image": g[1].images[0]}
    no_id = json.loads(made_lines[2])
    del no_id["id"]
    lines = [
        made_lines[0],  # 1: the made form, relative paths
        json.dumps(plain),  # 2: the plain form, absolute paths and a product image
        json.dumps({"id": "url", "images": [g[3].images[0], "https://example.com/ad.png"], "profile": "shoes"}),
        json.dumps({"id": "no-images", "profile": g[3].profile}),  # 4
        "",  # 5: blank lines are skipped, not records
        '{"id": "broken", "images": [',  # 6: not JSON
        json.dumps(no_id),  # 7: no id: "#7"
        made_lines[0],  # 8: g000000 again
        json.dumps({"id": "no-title", "images": g[4].images, "profile": {"queries": ["x"]}}),  # 9
        json.dumps({"id": "ok-last", "images": g[5].images, "profile": g[5].profile}),  # 10
    ]
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, summary, _ = batch([str(source), "--out", str(out)], capsys)
    assert code == 0
    recs = records(out)
    assert len(recs) == 9
    assert (summary["done"], summary["failed"]) == (4, 5)
    twice = [r for r in recs if r["id"] == g[0].id]
    assert len(twice) == 2
    first, repeat = sorted(twice, key=lambda r: "error" in r)
    same_selection(first, engine.select(g[0].images, g[0].profile))
    assert repeat["error"]["type"] == "InvalidInputError" and "more than once" in repeat["error"]["message"]
    got = {r["id"]: r for r in recs if r is not repeat}
    assert sorted(got) == sorted(["#6", "#7", g[0].id, "no-images", "no-title", "ok-last", "plain", "url"])
    for ident, want in (("plain", engine.select(g[1].images, g[1].profile, product_image=g[1].images[0])),
                        ("#7", engine.select(g[2].images, g[2].profile)),
                        ("ok-last", engine.select(g[5].images, g[5].profile))):
        assert "error" not in got[ident], got[ident]
        same_selection(got[ident], want)
    assert got["#7"]["images"] == [str(tmp_path / "images" / Path(p).name) for p in g[2].images]  # relative to it
    assert got["plain"]["images"] == g[1].images
    errors = {"url": "URL", "no-images": "'images'", "#6": "not valid JSON", "no-title": "title"}
    for ident, text in errors.items():
        error = got[ident]["error"]
        assert set(got[ident]) == {"id", "error"}
        assert error["type"] == "InvalidInputError" and text in error["message"], error
    assert str(source) in got["#6"]["error"]["message"]  # where: the file (and line)


def test_an_existing_out_needs_resume(made_groups, tmp_path, capsys):
    groups = made_groups(6)
    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"x","error":{"type":"InvalidInputError","message":"m"}}\n', encoding="utf-8")
    before = out.read_bytes()
    code, summary, err = batch([str(groups.path), "--out", str(out)], capsys)
    assert code == 2 and summary is None
    assert "--resume" in err and str(out) in err
    assert out.read_bytes() == before


def test_a_missing_input_is_an_error_not_a_traceback(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code, summary, err = batch([str(tmp_path / "nope.jsonl"), "--out", str(out)], capsys)
    assert code == 2 and summary is None
    assert "nope.jsonl" in err
    assert not out.exists()


def test_resume_skips_done_ids_and_cuts_a_half_last_line(made_groups, same_selection, tmp_path, capsys):
    groups = made_groups(6)
    full = tmp_path / "full.jsonl"
    assert batch([str(groups.path), "--out", str(full)], capsys)[0] == 0
    lines = full.read_bytes().splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])  # a kill in the middle of a write
    done = [json.loads(line)["id"] for line in lines[:2]]
    code, summary, _ = batch([str(groups.path), "--out", str(out), "--resume"], capsys)
    assert code == 0
    assert (summary["done"], summary["skipped"], summary["failed"]) == (4, 2, 0)
    assert out.read_bytes().startswith(lines[0] + lines[1])  # what was done is kept as it was
    got, want = by_id(records(out)), by_id(records(full))
    assert sorted(got) == groups.ids
    for ident in groups.ids:
        same_selection(got[ident], want[ident])
    assert [r["id"] for r in records(out)][:2] == done
    # everything done: a further --resume skips all and writes nothing
    before = out.read_bytes()
    code, summary, _ = batch([str(groups.path), "--out", str(out), "--resume"], capsys)
    assert code == 0 and (summary["done"], summary["skipped"]) == (0, 6)
    assert out.read_bytes() == before


# -- Ctrl-C, in a real process -------------------------------------------------------------------------

def start_batch(source: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`c4u batch SOURCE --out OUT --mode reason` (slow enough to interrupt), its stderr into `log`."""
    with open(log, "wb") as err:  # the child holds its own descriptor
        return subprocess.Popen([sys.executable, "-m", "c4u_engine.cli", "batch", str(source), "--out", str(out),
                                 "--no-progress", "--mode", "reason", *extra],
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, log: Path) -> tuple[int, dict]:
    try:
        out, _ = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"c4u batch did not end; its log:\n{log.read_text()}") from None
    return proc.returncode, summary_of(out) if out.strip() else {}


def wait_for(predicate, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert proc.poll() is None, f"c4u batch ended before {what}: {log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {log.read_text()}"
        time.sleep(0.05)


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def reason_run(made_groups, tmp_path_factory) -> tuple:
    """30 groups and the records of an uninterrupted reason-mode `c4u batch` over them."""
    groups = made_groups(30, seed=1)
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out, log = tmp / "out.jsonl", tmp / "log.txt"
    code, summary = finish(start_batch(groups.path, out, log), log)
    assert code == 0 and summary["done"] == 30, log.read_text()
    recs = by_id(records(out))
    assert sorted(recs) == groups.ids and not any("error" in r for r in recs.values())
    return groups, recs


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_then_resume_completes_the_file(reason_run, same_selection, tmp_path, presses):
    groups, want = reason_run
    out, log = tmp_path / "out.jsonl", tmp_path / "log.txt"
    # a small window, so that most groups are still to be admitted when Ctrl-C comes
    proc = start_batch(groups.path, out, log, "--max-in-flight", "6")
    try:
        wait_for(lambda: line_count(out) >= 2, proc, log, "two records")
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            wait_for(lambda: b"Ctrl-C again" in log.read_bytes(), proc, log, "the first Ctrl-C's message")
            proc.send_signal(signal.SIGINT)
        code, summary = finish(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, log.read_text()
    assert summary["interrupted"] is True
    partial = by_id(records(out))  # every line whole, no id twice
    assert 2 <= len(partial) < len(groups.ids), "the interrupted run admitted everything: nothing left to resume"
    assert summary["done"] == len(partial) and summary["failed"] == 0
    assert not any("error" in r for r in partial.values())  # a dropped item is not written, not an error record
    if presses == 1:
        assert summary["dropped"] == 0  # the first Ctrl-C lets what is in flight finish and be written
    assert "interrupted" in log.read_text()

    log2 = tmp_path / "resume.txt"
    code, summary = finish(start_batch(groups.path, out, log2, "--resume"), log2)
    assert code == 0, log2.read_text()
    assert (summary["skipped"], summary["done"], summary["failed"]) == (len(partial), 30 - len(partial), 0)
    got = by_id(records(out))
    assert sorted(got) == groups.ids
    for ident in groups.ids:
        same_selection(got[ident], want[ident])
        assert got[ident]["winner"] == want[ident]["winner"]
