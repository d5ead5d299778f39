"""The built-in model ships with the package and `c4u_engine.select` runs on it out of the box (onnxruntime, no
torch on that path)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from c4u_engine.builtin import builtin_model_dir


def _creatives(n: int, seed: int = 3):
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group

    group = sample_group(np.random.default_rng(seed), n)
    images = [np.asarray(render(spec, 112)) for spec in group.specs]
    return images, {"title": group.product.title, "queries": list(group.profile.queries)}


def test_builtin_model_is_packaged_with_its_onnx_export_and_card():
    d = builtin_model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
                 "MODEL_CARD.md", "onnx/manifest.json", "onnx/decoder.onnx", "onnx/vision.onnx"):
        assert (d / name).is_file(), name
    assert not list(d.rglob("*.bin")) and not list(d.rglob("*.pt"))
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert size < 50 * 2**20


def test_select_runs_on_onnxruntime_without_torch():
    code = (
        "import sys, json, numpy as np\n"
        "import c4u_engine\n"
        "from c4u_engine.data.creatives import render\n"
        "from c4u_engine.data.pairs import sample_group\n"
        "g = sample_group(np.random.default_rng(5), 3)\n"
        "imgs = [np.asarray(render(s, 112)) for s in g.specs]\n"
        "sel = c4u_engine.select(imgs, {'title': g.product.title, 'queries': list(g.profile.queries)})\n"
        "eng = c4u_engine.api.default_engine()\n"
        "print(json.dumps({'backend': eng.backend, 'torch': 'torch' in sys.modules, 'winner': sel.winner,\n"
        "                  'n': len(sel.comparisons)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnxruntime" and result["torch"] is False
    assert result["n"] == 4 and result["winner"] in (0, 1, 2)


def test_builtin_onnxruntime_and_torch_agree():
    pytest.importorskip("torch")
    from c4u_engine.api import Engine

    images, profile = _creatives(4)
    ort = Engine(builtin_model_dir(), backend="onnxruntime", precision="fp32").select(images, profile,
                                                                                       strategy="round_robin")
    ref = Engine(builtin_model_dir(), backend="torch").select(images, profile, strategy="round_robin")
    assert ort.ranking == ref.ranking
    assert all(abs(a.prob_a - b.prob_a) < 1e-4 for a, b in zip(ort.comparisons, ref.comparisons))


def test_builtin_runs_fp32_by_default_and_ships_int8_near_it():
    """fp32 by default; the shipped int8 engine (per-row, smoothed) one argument away. Bound: 0.05, about 3x the
    largest |dP(A)| bench_precision.py measured over 5,600 comparisons (0.017; BENCHMARKS.md, "Precision on any
    checkpoint")."""
    from c4u_engine.api import Engine, default_engine
    from c4u_engine.builtin import SHIPPED_QUANTIZED

    assert SHIPPED_QUANTIZED == ("int8",) and default_engine().precision == "fp32"
    images, profile = _creatives(4)
    ours = Engine(builtin_model_dir(), precision="int8").select(images, profile, strategy="round_robin")
    ref = default_engine().select(images, profile, strategy="round_robin")
    assert ours.stats["precision"] == "int8" and ref.stats["precision"] == "fp32"
    drift = [abs(a.prob_a - b.prob_a) for a, b in zip(ours.comparisons, ref.comparisons)]
    assert 0 < max(drift) < 0.05, drift
    from c4u_engine.runners.engine_dir import load_engine_dir

    shipped = load_engine_dir(builtin_model_dir(), precision="int8")
    assert shipped.precision.activation_scales == "per_row" and shipped.batch_invariant

def test_builtin_reasons_in_the_protocol_format():
    from c4u_engine.api import default_engine

    images, profile = _creatives(2, seed=11)
    c = default_engine().compare(images[0], images[1], profile, mode="reason", max_new_tokens=400)
    assert c.answer in ("A", "B") and c.error is None
    assert c.reasoning and "Conclusion" in c.reasoning
