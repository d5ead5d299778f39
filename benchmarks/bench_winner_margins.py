"""Why int8 changes winners on a random checkpoint: the fp32 winner's margin against each precision's score shift,
and which rounding (weights, activations) does it.

    python benchmarks/bench_winner_margins.py [--checkpoint random-40m|outliers-40m|builtin] [--groups 8] [--reps 3]

Issue 23 asks for the same winner as fp32 in every group on ~40M random checkpoints. A selection's winner is the
candidate with the best score (mean P of beating the others, Selection.scores); this script prints, per group, the
fp32 gap between the winner and the runner-up beside how far each engine moves any candidate's score, then per
engine the agreement (same answers, same winner) and the speed of an N = 8 round-robin fast selection, paired
against fp32 in the same run. Engines, each on the same checkpoint:

- fp32 (the baseline) and the shipped int8 (per-row activation scales, smoothing, batch-invariant attention);
- weights int8 only: the int8 export's weight rounding (symmetric, per output channel) applied to a copy of the
  checkpoint (weights dequantized back to float), run as an fp32 engine: the error of int8 weights alone, with
  every activation in float;
- 8-bit MatMulNBits (onnxruntime's weight-only quantizer with bits=8, blocks of 32 along K, through export/quantize's
  int4 path with the bit width swapped): accuracy_level 1 (dequantized weights, fp32 arithmetic) and 4 (activations
  quantized to int8 per block of 32 inside the kernel, int8 arithmetic). These two are experiment engines in the
  benchmark's work directory only: their manifests say int4 (the exporter has no 8-bit weight-only precision).

Nothing is downloaded: the checkpoints are built locally (benchmarks/workload.py) in --work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_precision  # noqa: E402  (its checkpoints, engines and synthetic groups)
import report  # noqa: E402

WEIGHTS_INT8 = "weights int8 only (dequantized), fp32 arithmetic"
NBITS = {"MatMulNBits 8-bit, fp32 arithmetic (accuracy_level 1)": 1,
         "MatMulNBits 8-bit, int8 activations per block of 32 (accuracy_level 4)": 4}


def weights_int8_checkpoint(ckpt: Path, out: Path) -> Path:
    """A copy of ckpt whose decoder and vision-block weights went through int8 and back (per output channel,
    symmetric, as export/quantize.py rounds them), with its fp32 engine in out/onnx."""
    from safetensors.numpy import load_file, save_file

    if (out / "onnx" / "manifest.json").is_file():
        return out
    shutil.copytree(ckpt, out, ignore=shutil.ignore_patterns("onnx*"), dirs_exist_ok=True)
    weights = load_file(str(ckpt / "model.safetensors"))
    for name, w in weights.items():
        quantized = name.startswith(("model.layers.", "visual.blocks.")) or name == "lm_head.weight"
        if quantized and w.ndim == 2 and name.endswith(".weight"):
            scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            weights[name] = (np.clip(np.round(w / scale), -127, 127) * scale).astype(w.dtype)
    save_file(weights, str(out / "model.safetensors"))
    from export.onnx_export import export_engine

    export_engine(out, log=lambda message: None)
    return out


def nbits8_engine(fp32_dir: Path, out: Path, accuracy_level: int) -> Path:
    """export/quantize's int4 path with onnxruntime's quantizer told bits=8 and this accuracy level."""
    if (out / "manifest.json").is_file():
        return out
    import onnxruntime.quantization.matmul_nbits_quantizer as nbits

    from export.quantize import quantize_engine

    config, quantizer = nbits.DefaultWeightOnlyQuantConfig, nbits.MatMulNBitsQuantizer
    nbits.DefaultWeightOnlyQuantConfig = lambda **kw: config(**{**kw, "bits": 8, "accuracy_level": accuracy_level})
    nbits.MatMulNBitsQuantizer = lambda model, **kw: quantizer(model, **{**kw, "bits": 8,
                                                                          "accuracy_level": accuracy_level})
    try:
        quantize_engine(fp32_dir, out, "int4", block_size=32, log=lambda message: None)
    finally:
        nbits.DefaultWeightOnlyQuantConfig, nbits.MatMulNBitsQuantizer = config, quantizer
    return out


def select_all(engine, groups) -> list:
    return [engine.select(images, profile, mode="fast", strategy="round_robin", use_cache=False)
            for images, profile in groups]


def agreement(base: list, ours: list) -> dict:
    dp = [abs(a.prob_a - b.prob_a) for r, s in zip(base, ours) for a, b in zip(r.comparisons, s.comparisons)]
    same = [a.answer == b.answer for r, s in zip(base, ours) for a, b in zip(r.comparisons, s.comparisons)]
    return {"mean_dpa": float(np.mean(dp)), "max_dpa": float(np.max(dp)), "same_answer": float(np.mean(same)),
            "same_winner": sum(r.winner == s.winner for r, s in zip(base, ours)),
            "score_shift": [max(abs(r.scores[k] - s.scores[k]) for k in r.ranking) for r, s in zip(base, ours)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", choices=["random-40m", "outliers-40m", "builtin"], default="random-40m")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--reps", type=int, default=3, help="paired timing repetitions (0: skip timing)")
    p.add_argument("--work", help="work directory (default: a temporary one); keeps checkpoints and engines")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    from c4u_engine.api import Engine

    work = Path(args.work or tempfile.mkdtemp(prefix="c4u-margins-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ckpt = bench_precision.prepare_checkpoint(  # the invariant fp32 export is the 8-bit MatMulNBits engines' source
        work, ["onnxruntime fp32", "onnxruntime fp32, batch-invariant attention", "onnxruntime int8"], args.checkpoint)
    fp32_invariant = ckpt / "onnx-invariant"  # the int8 engines' source
    engines = {"fp32": Engine(ckpt / "onnx"), "int8 (shipped method)": Engine(ckpt / "onnx-int8"),
               WEIGHTS_INT8: Engine(weights_int8_checkpoint(ckpt, work / f"{ckpt.name}-weights-int8") / "onnx")}
    for label, level in NBITS.items():
        engines[label] = Engine(nbits8_engine(fp32_invariant, ckpt / f"onnx-nbits8-acc{level}", level))
    size = 112 if args.checkpoint == "builtin" else 224
    groups = bench_precision.synthetic_groups(args.groups, size, seed=2026)
    print("[margins] selections", file=sys.stderr, flush=True)
    results = {label: select_all(engine, groups) for label, engine in engines.items()}
    base = results["fp32"]
    gaps = [r.scores[r.ranking[0]] - r.scores[r.ranking[1]] for r in base]
    spreads = [r.scores[r.ranking[0]] - r.scores[r.ranking[-1]] for r in base]
    stats = {label: agreement(base, sels) for label, sels in results.items() if label != "fp32"}

    speed = {}
    if args.reps:
        print("[margins] timing", file=sys.stderr, flush=True)
        labels = list(engines)
        seconds = {label: [] for label in labels}
        for rep in range(args.reps):
            images, profile = groups[rep % len(groups)]
            for label in labels[rep % len(labels):] + labels[: rep % len(labels)]:  # rotate the order each rep
                t0 = time.perf_counter()
                engines[label].select(images, profile, mode="fast", strategy="round_robin", use_cache=False)
                seconds[label].append(time.perf_counter() - t0)
        base_s = np.array(seconds["fp32"])
        speed = {label: {"median_s": float(np.median(s)), "speedup": float(np.median(base_s / np.array(s)))}
                 for label, s in seconds.items()}

    labels = list(stats)
    print(f"checkpoint: {args.checkpoint}; {report.machine()}; N = 8 round robin, fast, {args.groups} groups; "
          f"{time.perf_counter() - start:.0f} s in all\n")
    print("Per group: the fp32 winner's score gap to the runner-up (scores: mean P of beating the others), the spread "
          "of all eight scores, and each engine's largest score shift (* where its winner differs)\n")
    headers = ["group", "fp32 winner gap", "fp32 score spread"] + labels
    rows = [[g, f"{gaps[g]:.5f}", f"{spreads[g]:.5f}"]
            + [f"{stats[lb]['score_shift'][g]:.5f}{'' if results[lb][g].winner == base[g].winner else ' *'}"
               for lb in labels] for g in range(len(groups))]
    print(report.markdown_table(headers, rows) + "\n")
    headers = ["engine", "speed-up vs fp32", "mean |dP(A)|", "max |dP(A)|", "same answer", "same winner",
               "median score shift"]
    rows = [[lb, f"{speed[lb]['speedup']:.2f}x" if speed else "-", f"{stats[lb]['mean_dpa']:.4f}",
             f"{stats[lb]['max_dpa']:.4f}", f"{100 * stats[lb]['same_answer']:.1f}%",
             f"{stats[lb]['same_winner']}/{len(groups)}", f"{np.median(stats[lb]['score_shift']):.5f}"]
            for lb in labels]
    print(report.markdown_table(headers, rows))
    fp32_s = speed.get("fp32", {}).get("median_s", 0.0)
    print(f"\nmedian fp32 winner gap {np.median(gaps):.5f}; fp32 selection {fp32_s:.2f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"gaps": gaps, "spreads": spreads, "stats": stats, "speed": speed},
                                             indent=1))


if __name__ == "__main__":
    main()
