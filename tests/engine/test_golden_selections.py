"""Selections recorded from the engine before its core was reshaped (issue 22), replayed on every change.

For every judge mode x strategy x KV layout x lanes setting (onnxruntime, the built-in model) and the torch runner,
a selection of five creatives (three sizes, so batches need padding) must give the recorded ranking, winner, answers
and reasoning texts, and P(A) within 1e-6; the same selections submitted all at once (batched together across
requests) must give the same within 1e-5. Record anew (only when a change is meant to change results) with
`C4U_RECORD_GOLDEN=1 pytest tests/engine/test_golden_selections.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tiny_checkpoint import make_test_image

from c4u_engine.api import Engine
from c4u_engine.builtin import builtin_model_dir

FIXTURE = Path(__file__).parent / "data" / "golden_selections.json"
RECORD = os.environ.get("C4U_RECORD_GOLDEN") == "1"
PROFILE = {"title": "Waterproof trail running shoes", "queries": ["running shoes sale", "trail shoes"]}
SETTINGS = [(backend, layout, lanes) for backend, lanes in (("onnxruntime", 1), ("onnxruntime", 2), ("torch", 1))
            for layout in ("contiguous", "paged")]
CASES = [(mode, strategy) for mode in ("fast", "reason", "hybrid") for strategy in ("knockout", "round_robin")]
MAX_NEW_TOKENS = 256


def _images():
    return [make_test_image(112, 112, seed=1), make_test_image(112, 112, seed=2), make_test_image(140, 84, seed=3),
            make_test_image(112, 112, seed=4), make_test_image(84, 140, seed=5)]


def _record(sel) -> dict:
    return {"winner": sel.winner, "ranking": list(sel.ranking),
            "comparisons": [{"first": c.first, "second": c.second, "answer": c.answer, "prob_a": c.prob_a,
                             "mode": c.mode, "text": c.raw_text, "error": c.error} for c in sel.comparisons]}


def _run(backend: str, layout: str, lanes: int, together: bool) -> dict[str, dict]:
    engine = Engine(builtin_model_dir(), backend=backend, kv_layout=layout, kv_block_size=7, lanes=lanes)
    try:
        images = _images()
        kwargs = [dict(mode=mode, strategy=strategy, max_new_tokens=MAX_NEW_TOKENS) for mode, strategy in CASES]
        if together:
            futures = [engine.submit(images, PROFILE, **kw) for kw in kwargs]
            sels = [f.result(timeout=600) for f in futures]
        else:
            sels = [engine.select(images, PROFILE, **kw) for kw in kwargs]
        return {f"{mode}/{strategy}": _record(sel) for (mode, strategy), sel in zip(CASES, sels)}
    finally:
        engine.close()


def _check(got: dict, want: dict, tol: float, where: str) -> None:
    assert set(got) == set(want), where
    for case, w in want.items():
        g = got[case]
        at = f"{where} {case}"
        assert (g["winner"], g["ranking"]) == (w["winner"], w["ranking"]), at
        assert len(g["comparisons"]) == len(w["comparisons"]), at
        for k, (gc, wc) in enumerate(zip(g["comparisons"], w["comparisons"])):
            assert {x: gc[x] for x in gc if x != "prob_a"} == {x: wc[x] for x in wc if x != "prob_a"}, f"{at} #{k}"
            assert abs(gc["prob_a"] - wc["prob_a"]) <= tol, f"{at} #{k}: {gc['prob_a']} vs {wc['prob_a']}"


@pytest.fixture(scope="module")
def golden() -> dict:
    if RECORD:
        data = {f"{b}/{lay}/lanes={n}": _run(b, lay, n, together=False) for b, lay, n in SETTINGS}
        FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("backend,layout,lanes", SETTINGS)
def test_selections_equal_the_recorded_ones(golden, backend, layout, lanes):
    where = f"{backend}/{layout}/lanes={lanes}"
    _check(_run(backend, layout, lanes, together=False), golden[where], 1e-6, where)


@pytest.mark.parametrize("backend,layout,lanes", [("onnxruntime", "paged", 2), ("torch", "contiguous", 1)])
def test_selections_batched_together_equal_the_recorded_ones(golden, backend, layout, lanes):
    where = f"{backend}/{layout}/lanes={lanes}"
    _check(_run(backend, layout, lanes, together=True), golden[where], 1e-5, where + " together")


def test_the_recording_holds_real_work(golden):
    """The fixture itself: every setting and case, reasoning texts present, both answers seen."""
    assert len(golden) == len(SETTINGS)
    for setting in golden.values():
        assert set(setting) == {f"{m}/{s}" for m, s in CASES}
        reason = setting["reason/round_robin"]["comparisons"]
        assert len(reason) == 20 and all(c["text"] and c["answer"] in ("A", "B") for c in reason)
        assert {c["answer"] for c in setting["fast/round_robin"]["comparisons"]} == {"A", "B"}
