"""`c4u batch --ray` (Ray Data, a local Ray instance, one actor) writes the records a local `c4u batch` writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from c4u_engine.cli import main

N_GROUPS = 200  # several of the actor's 64-line batches, the last one partial
OPTIONS = ["--orders", "one"]  # not the default: the actors must apply the flags too (and it halves the work)


def records_by_id(path: Path) -> dict[str, dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends with half a line"
    recs = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "an id written twice"
    return {r["id"]: r for r in recs}


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_run_equals_the_local_run(made_groups, same_selection, tmp_path, capsys):
    pytest.importorskip("ray.data", reason="the ray-data extra is not installed")
    groups = made_groups(N_GROUPS, seed=2)
    local = tmp_path / "local.jsonl"
    assert main(["batch", str(groups.path), "--out", str(local), "--no-progress", *OPTIONS]) == 0
    capsys.readouterr()

    out, log = tmp_path / "ray.jsonl", tmp_path / "ray.log"
    # A process of its own: Ray must be imported after c4u keeps it on 127.0.0.1 (this process has imported it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "c4u_engine.cli", "batch", str(groups.path), "--out", str(out),
                                 "--no-progress", "--ray", "--actors", "1", *OPTIONS], stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"c4u batch --ray did not end; its log:\n{log.read_text()}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of Ray's outlived its driver (its own session)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log.read_text()
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["skipped"]) == (N_GROUPS, 0, 0), summary

    got, want = records_by_id(out), records_by_id(local)
    assert sorted(got) == sorted(want) == groups.ids
    for ident in groups.ids:
        assert "error" not in got[ident], got[ident]
        assert got[ident]["images"] == want[ident]["images"]
        same_selection(got[ident], want[ident])
        assert got[ident]["stats"]["orders"] == want[ident]["stats"]["orders"] == "one"
