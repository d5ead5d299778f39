"""Precision benchmark: every precision against fp32 onnxruntime, in one run, one machine, on one checkpoint.

    python benchmarks/bench_precision.py [--checkpoint builtin|random-40m|outliers-40m] [--groups 100]
        [--test-pairs 300] [--reps 5] [--invariance-requests 24] [--out results.json]

Checkpoints: the built-in model (112 px creatives); a ~40M-parameter Qwen2.5-VL checkpoint with random weights
(benchmarks/workload.py, the selection benchmark's; 224 px creatives); the same checkpoint with outlier channels
(tests/tiny_checkpoint.add_outlier_channels: a few RMSNorm channels x60 and the consuming projection rows /60, so
float outputs are unchanged while a few activation channels are 60x the rest, as in real LLMs).
Per configuration (onnxruntime fp32 = the baseline; int8 as exported by default (per-row activation scales,
SmoothQuant, the vision tower's first and last layers float), per-row without smoothing, per-tensor (onnxruntime's
quantize_dynamic, the previous default), the float-kept variants; int4; fp16; torch fp32 and bf16):
- time of an N = 8 round-robin fast selection and of a reason-mode selection (N = 4 knockout, up to 256 new
  tokens), median over --reps repetitions of 4 groups, the precisions interleaved within each repetition so that
  load on the machine falls on all of them alike; speed-up = fp32 onnxruntime time / this time;
- size on disk (graphs + embedding table; the safetensors file for torch);
- peak RSS of a `c4u select` process (8 creatives, fast, round robin) in that precision;
- drift against fp32 onnxruntime on --groups synthetic groups of 8 (round robin, fast, both orders):
  max and mean |dP(A)| over all comparisons, the share of comparisons with the same answer, of groups with the
  same winner, of groups with the same ordered answers (every comparison's answer equal) and the same ranking;
- held-out accuracy of the built-in model (its synthetic test split regenerated from the training seed: the first
  --test-pairs test pairs of 20,000 and 100 groups of 4, the numbers of MODEL_CARD.md), fast mode (random
  checkpoints: none);
- batch invariance: --invariance-requests requests of 4 creatives (round robin, fast), each alone with every cache
  off, then all submitted at once to one engine; max |dP(A)| between the two.

The quantized and fp16 engines are exported from the built-in checkpoint into a work directory (a few seconds each)
unless the package ships them. Prints a markdown table and the machine; --out writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(ROOT))  # `import export` (a repo-level package)
sys.path.append(str(ROOT / "tests"))  # tiny_checkpoint.add_outlier_channels
import report  # noqa: E402

# label -> (backend, precision, engine subdirectory of the checkpoint copy, float-kept units for int8 / int4,
# int8 options of export/quantize.py). The float-kept variants are the measurements behind DEFAULT_FLOAT_KEPT.
DEFAULT_KEPT = ("vision.patch_embed", "vision.merger")
UNSMOOTHED = {"smoothing": False}
PER_TENSOR = {"activation_scales": "per_tensor", "smoothing": False}
FLOAT_COLUMNS = {"smoothing": False, "float_columns": True}
# batch_invariant: the attention of the fp32 engine (or of the one an int8 / int4 engine is quantized from); default
# as `c4u export` does: on for int8 / int4, off for fp32
FUSED = {"batch_invariant": False}
CONFIGS = {
    "onnxruntime fp32": ("onnxruntime", "fp32", "onnx", None, {}),
    "onnxruntime fp32, batch-invariant attention": ("onnxruntime", "fp32", "onnx-invariant", None,
                                                    {"batch_invariant": True}),
    "onnxruntime int8": ("onnxruntime", "int8", "onnx-int8", DEFAULT_KEPT, {}),  # the default: per row, smoothed
    "onnxruntime int8, fused attention (not batch-invariant)": ("onnxruntime", "int8", "onnx-int8-fused",
                                                                DEFAULT_KEPT, FUSED),
    "onnxruntime int8 per-row, no smoothing": ("onnxruntime", "int8", "onnx-int8-unsmoothed", DEFAULT_KEPT,
                                               UNSMOOTHED),
    "onnxruntime int8 per-tensor (quantize_dynamic)": ("onnxruntime", "int8", "onnx-int8-per-tensor", DEFAULT_KEPT,
                                                       PER_TENSOR),
    "onnxruntime int8 per-row, outlier channels float (LLM.int8-style)": (
        "onnxruntime", "int8", "onnx-int8-float-columns", DEFAULT_KEPT, FLOAT_COLUMNS),
    "onnxruntime int8, vision float": ("onnxruntime", "int8", "onnx-int8-vision-float", ("vision",), {}),
    "onnxruntime int8, all vision int8": ("onnxruntime", "int8", "onnx-int8-vision-all", (), {}),
    "onnxruntime int8, lm_head float": ("onnxruntime", "int8", "onnx-int8-lmhead", (*DEFAULT_KEPT, "lm_head"), {}),
    "onnxruntime int4": ("onnxruntime", "int4", "onnx-int4", DEFAULT_KEPT, {}),
    "onnxruntime fp16": ("onnxruntime", "fp16", "onnx-fp16", None, {}),
    "torch fp32": ("torch", "fp32", None, None, {}),
    "torch bf16": ("torch", "bf16", None, None, {}),
}
BASELINE = "onnxruntime fp32"
CHECKPOINTS = ("builtin", "random-40m", "outliers-40m")
# What each checkpoint is measured with by default (--configs overrides).
DEFAULT_CONFIGS = {
    "builtin": list(CONFIGS),
    "random-40m": ["onnxruntime fp32", "onnxruntime int8", "onnxruntime int8 per-row, no smoothing",
                   "onnxruntime int8 per-tensor (quantize_dynamic)", "onnxruntime int4"],
}
DEFAULT_CONFIGS["outliers-40m"] = DEFAULT_CONFIGS["random-40m"]


def _quiet(message: str) -> None:
    pass


def prepare_checkpoint(work: Path, labels: list[str], checkpoint: str = "builtin") -> Path:
    """A copy of the checkpoint with each configuration's engine beside it (exported unless present). The int8
    engines are quantized from the fp32 export (one trace for all of them)."""
    from export.onnx_export import export_engine
    from export.quantize import quantize_engine

    if checkpoint == "builtin":
        from c4u_engine.builtin import builtin_model_dir

        ckpt = work / "builtin"
        if not ckpt.exists():
            shutil.copytree(builtin_model_dir(), ckpt)
    else:
        import workload
        from tiny_checkpoint import add_outlier_channels

        ckpt = workload.checkpoint(work)
        if checkpoint == "outliers-40m":
            outliers = work / "c4u-bench-40m-outliers"
            if not (outliers / "config.json").is_file():
                add_outlier_channels(ckpt, outliers)
            ckpt = outliers

    def fp32_engine(invariant: bool) -> Path:  # the fp32 engine of that attention (quantized engines' source too)
        sub = ckpt / ("onnx-invariant" if invariant else "onnx")
        if not _made_as(sub, "fp32", {"batch_invariant": invariant}):
            export_engine(ckpt, sub, batch_invariant=invariant, log=_quiet)
        return sub

    fp32_engine(False)
    for label in labels:
        _, precision, sub, kept, options = CONFIGS[label]
        options = dict(options)
        invariant = options.pop("batch_invariant", precision in ("int8", "int4"))
        if sub is None or _made_as(ckpt / sub, precision, {**options, "batch_invariant": invariant}):
            continue
        if precision in ("int8", "int4"):
            quantize_engine(fp32_engine(invariant), ckpt / sub, precision, float_kept=kept, log=_quiet, **options)
        elif precision == "fp32":
            fp32_engine(invariant)
        else:
            export_engine(ckpt, ckpt / sub, precision=precision, float_kept=kept, log=_quiet)
    return ckpt


def _made_as(engine_dir: Path, precision: str, options: dict) -> bool:
    """Whether engine_dir holds an engine of this precision made with these int8 options (a shipped onnx-int8/ of
    an older method is re-made)."""
    from c4u_engine.runners.engine_dir import read_manifest

    if not (engine_dir / "manifest.json").is_file():
        return False
    manifest = read_manifest(engine_dir / "manifest.json")
    if bool(manifest.get("batch_invariant")) != options.get("batch_invariant", False):
        return False
    block = manifest.get("precision") or {"name": "fp32"}
    if precision != "int8":
        return block["name"] == precision
    scales = options.get("activation_scales", "per_row")
    smoothed = options.get("smoothing", True)
    return (block.get("activation_scales", "per_tensor") == scales and bool(block.get("smoothing")) == smoothed
            and bool(block.get("float_columns")) == options.get("float_columns", False))


def make_engine(ckpt: Path, label: str, **settings):
    from c4u_engine.api import Engine

    _, precision, sub, _, _ = CONFIGS[label]
    return Engine(ckpt, backend="torch", precision=precision, **settings) if sub is None else \
        Engine(ckpt / sub, **settings)


def engine_bytes(ckpt: Path, label: str) -> int:
    sub = CONFIGS[label][2]
    if sub is None:
        return (ckpt / "model.safetensors").stat().st_size
    from c4u_engine.runners.engine_dir import load_engine_dir

    engine_dir = load_engine_dir(ckpt / sub, verify_hashes=False)
    files = [g.file for g in engine_dir.graphs.values()] + [x for g in engine_dir.graphs.values()
                                                             for x in g.external_data] + [engine_dir.embeddings.file]
    return sum((engine_dir.path / f).stat().st_size for f in files)


def synthetic_groups(n: int, size: int, seed: int) -> list[tuple[list, Any]]:
    from c4u_engine.data.creatives import render
    from c4u_engine.data.pairs import sample_group
    from c4u_engine.profile import Profile

    out = []
    for i in range(n):
        group = sample_group(np.random.default_rng([seed, i]), 8)
        out.append(([render(s, size) for s in group.specs],
                    Profile(title=group.product.title, queries=group.profile.queries)))
    return out


def timings(engines: dict, groups: list, reps: int, kinds: tuple[str, ...] = ("fast", "reason")
            ) -> dict[str, dict[str, float]]:
    """Median seconds per selection, fast (N = 8 round robin) and reason (N = 4 knockout), per engine, and the
    median over repetitions of each engine's paired speed-up against the baseline ("<kind> speedup")."""
    runs = {"fast": dict(mode="fast", strategy="round_robin"),
            "reason": dict(mode="reason", strategy="knockout", max_new_tokens=256)}
    out: dict[str, dict[str, float]] = {label: {} for label in engines}
    for kind in kinds:
        options = runs[kind]
        picked = [(imgs if kind == "fast" else imgs[:4], p) for imgs, p in groups[:4]]
        for engine in engines.values():  # warm-up
            engine.select(*picked[0], use_cache=False, **options)
        samples: dict[str, list[float]] = {label: [] for label in engines}
        for _ in range(reps):
            for label, engine in engines.items():
                t0 = time.perf_counter()
                for imgs, profile in picked:
                    engine.select(imgs, profile, use_cache=False, **options)
                samples[label].append((time.perf_counter() - t0) / len(picked))
        for label in engines:
            out[label][kind] = statistics.median(samples[label])
            out[label][f"{kind} speedup"] = statistics.median(
                b / t for b, t in zip(samples[BASELINE], samples[label]))
    return out


def batch_invariance(ckpt: Path, label: str, requests: list) -> float:
    """max |dP(A)| between each request alone (every cache off) and all of them submitted at once."""
    alone_engine = make_engine(ckpt, label, encoder_cache_bytes=0, prefix_cache_bytes=0)
    alone = [alone_engine.select(im, p, strategy="round_robin", use_cache=False) for im, p in requests]
    alone_engine.close()
    shared = make_engine(ckpt, label)
    got = [f.result() for f in [shared.submit(im, p, strategy="round_robin") for im, p in requests]]
    shared.close()
    return max(abs(x.prob_a - y.prob_a) for g, r in zip(got, alone) for x, y in zip(g.comparisons, r.comparisons))


def drift(engines: dict, groups: list) -> dict[str, dict[str, float]]:
    """P(A) drift and pick agreement of each engine against the baseline on the same groups."""
    results = {label: [e.select(imgs, p, mode="fast", strategy="round_robin", use_cache=False) for imgs, p in groups]
               for label, e in engines.items()}
    base = results[BASELINE]
    out = {}
    for label, sels in results.items():
        d, same_answer, comparisons = [], 0, 0
        same_winner = same_ordered = same_ranking = 0
        for ours, ref in zip(sels, base):
            assert [(c.first, c.second) for c in ours.comparisons] == [(c.first, c.second) for c in ref.comparisons]
            answers_equal = [a.answer == b.answer for a, b in zip(ours.comparisons, ref.comparisons)]
            d += [abs(a.prob_a - b.prob_a) for a, b in zip(ours.comparisons, ref.comparisons)]
            same_answer += sum(answers_equal)
            comparisons += len(answers_equal)
            same_winner += ours.winner == ref.winner
            same_ordered += all(answers_equal)
            same_ranking += list(ours.ranking) == list(ref.ranking)
        out[label] = {"max_dpa": max(d), "mean_dpa": float(np.mean(d)), "same_answer": same_answer / comparisons,
                      "same_winner": same_winner / len(sels), "same_ordered_answers": same_ordered / len(sels),
                      "same_ranking": same_ranking / len(sels)}
    return out


def held_out_accuracy(engines: dict, data_dir: Path, test_pairs: int) -> dict[str, dict[str, float]]:
    from c4u_engine.data.pairs import make_held_out
    from c4u_engine.train.evaluate import evaluate

    if not (data_dir / "test.jsonl").is_file():  # the shipped model's data: seed 0, 20,000 pairs at 112 px
        make_held_out(data_dir, 0, 20000, max_test_pairs=test_pairs, n_groups=100, size=112)
    out = {}
    for label, engine in engines.items():
        metrics = evaluate(None, data_dir, split="test", modes=("fast",), max_pairs=test_pairs, engine=engine)["fast"]
        out[label] = {"accuracy": metrics["accuracy"], "group_accuracy": metrics["group_accuracy"]}
    return out


def peak_rss_mib(ckpt: Path, label: str, image_paths: list[str]) -> float:
    """Peak RSS of a fresh `c4u select` process: measured from a parent that runs only it."""
    backend, precision, sub, _, _ = CONFIGS[label]
    cmd = [sys.executable, "-m", "c4u_engine.cli", "select", *image_paths, "--title", "x", "--strategy",
           "round_robin", "--model", str(ckpt if sub is None else ckpt / sub), "--backend", backend]
    if sub is None:
        cmd += ["--precision", precision]
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    code, kib = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"{label}: c4u select failed ({code})")
    return int(kib) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="builtin")
    parser.add_argument("--groups", type=int, default=100, help="synthetic groups of 8 for drift and agreement")
    parser.add_argument("--test-pairs", type=int, default=300, help="held-out test pairs for accuracy (built-in)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--invariance-requests", type=int, default=24, help="requests for batch invariance (0: skip)")
    parser.add_argument("--modes", default="fast,reason", help="timed selections: fast, reason or both")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--work", help="work directory (default: a temporary one); keeps exports and data")
    parser.add_argument("--configs", help="';'-separated subset of: " + "; ".join(CONFIGS))
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    labels = [c.strip() for c in (args.configs or ";".join(DEFAULT_CONFIGS[args.checkpoint])).split(";") if c.strip()]
    if BASELINE not in labels or any(c not in CONFIGS for c in labels):
        parser.error(f"--configs must include {BASELINE!r} and name only {list(CONFIGS)}")
    builtin = args.checkpoint == "builtin"
    size = 112 if builtin else 224
    kinds = tuple(k for k in args.modes.split(",") if k)
    work = Path(args.work or tempfile.mkdtemp(prefix="c4u-precision-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ckpt = prepare_checkpoint(work, labels, args.checkpoint)
    engines = {label: make_engine(ckpt, label) for label in labels}
    groups = synthetic_groups(max(args.groups, 4), size, seed=2026)

    print(f"[bench] timing ({args.reps} reps)", file=sys.stderr, flush=True)
    times = timings(engines, groups, args.reps, kinds)
    print("[bench] drift and agreement", file=sys.stderr, flush=True)
    drifts = drift(engines, groups[: args.groups])
    accuracy = {}
    if builtin:
        print("[bench] held-out accuracy", file=sys.stderr, flush=True)
        accuracy = held_out_accuracy(engines, work / f"held_out_{args.test_pairs}", args.test_pairs)
    invariance = {}
    if args.invariance_requests:
        print("[bench] batch invariance", file=sys.stderr, flush=True)
        requests = [(images[:4], profile) for images, profile in
                    synthetic_groups(args.invariance_requests, size, seed=77)]
        for engine in engines.values():
            engine.close()
        invariance = {label: batch_invariance(ckpt, label, requests) for label in labels}
    rss = {}
    if not args.no_rss:
        print("[bench] peak RSS", file=sys.stderr, flush=True)
        images_dir = work / "rss_images"
        images_dir.mkdir(exist_ok=True)
        image_paths = []
        for i, img in enumerate(groups[0][0]):
            path = images_dir / f"c{i}.png"
            img.save(path)
            image_paths.append(str(path))
        rss = {label: peak_rss_mib(ckpt, label, image_paths) for label in labels}
    sizes = {label: engine_bytes(ckpt, label) for label in labels}

    na = "-"
    rows, results = [], {}
    for label in labels:
        t, d, a = times[label], drifts[label], accuracy.get(label, {})
        results[label] = {"seconds": {k: t[k] for k in kinds}, "speedup": {k: t[f"{k} speedup"] for k in kinds},
                          "bytes": sizes[label], "peak_rss_mib": rss.get(label),
                          "batch_invariance_max_dpa": invariance.get(label), **d, **a}
        row = [label]
        for k in kinds:
            row += [f"{t[k] * 1e3:.0f} ms", f"{t[f'{k} speedup']:.2f}x"]
        row += [f"{sizes[label] / 2**20:.1f} MiB", f"{rss[label]:.0f} MiB" if label in rss else na,
                f"{d['max_dpa']:.4f}", f"{d['mean_dpa']:.4f}", f"{100 * d['same_answer']:.1f}%",
                f"{100 * d['same_winner']:.0f}%", f"{100 * d['same_ordered_answers']:.0f}%",
                f"{100 * d['same_ranking']:.0f}%",
                f"{100 * a['accuracy']:.1f}%" if a else na, f"{100 * a['group_accuracy']:.0f}%" if a else na,
                f"{invariance[label]:.1e}" if label in invariance else na]
        rows.append(row)
    headers = ["precision"]
    for k in kinds:
        headers += ["fast N=8 rr" if k == "fast" else "reason N=4 ko", "speed-up"]
    headers += ["size", "peak RSS", "max |dP(A)|", "mean |dP(A)|", "same answer", "same winner",
                "same ordered answers", "same ranking", "held-out acc (fast)", "group acc",
                "batched vs alone max |dP(A)|"]
    print(report.markdown_table(headers, rows))
    print(f"\ncheckpoint: {args.checkpoint} ({size} px creatives); machine: {report.machine()}; {args.groups} groups "
          f"of 8 for drift; speed-up: median of paired ratios over {args.reps} reps; "
          f"{args.test_pairs if builtin else 0} held-out pairs; {args.invariance_requests} requests for batch "
          f"invariance; {time.perf_counter() - t_start:.0f} s in all")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": report.machine(), "checkpoint": args.checkpoint,
                                              "groups": args.groups, "test_pairs": args.test_pairs,
                                              "reps": args.reps, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
