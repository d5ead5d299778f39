"""c4u_engine against llama.cpp (llama-cpp-python), the tool an edge user would pick instead, on the same prompts.

    pip install 'c4u_engine[bench]'   # llama-cpp-python builds llama.cpp from source: ~25 min on 2 cores
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llama-src
    tar xzf /tmp/llama-src/llama_cpp_python-0.3.36.tar.gz -C /tmp/llama-src   # the converter: vendor/llama.cpp
    python benchmarks/bench_llama_cpp.py --llama-cpp-dir /tmp/llama-src/llama_cpp_python-0.3.36 \\
        --workdir /tmp/c4u-llama --reps 5 --out llama_cpp.json

The workload (benchmarks/workload.py): the ~40M Qwen2.5-VL checkpoint with random weights, N 224x224 creatives, one
round-robin fast selection in both orders (N = 8: 56 ordered comparisons), --threads cores (default 2).

llama.cpp side: the checkpoint converted by llama.cpp's own converter (benchmarks/llama_cpp_gguf.py) to f32 and
Q8_0 GGUFs (text model + mmproj), driven through the low-level bindings (benchmarks/llama_cpp_judge.py) two ways:
the whole prompt per pair (what its chat handlers do) and with the best reuse the API allows (images encoded once,
[prefix] and [prefix + A] evaluated once, per pair only B and the tail, the KV cut back), one pair at a time and
batched across the pairs of one A as sequences. The prompt text is exactly the engine's
(Engine.comparison_messages rendered by its chat template); the script checks that llama.cpp tokenizes it to the
engine's ids. P(A) is the softmax of the two answer-token logits after the fast-mode assistant prefix.

c4u side: Engine(CKPT, backend="onnxruntime") with default settings, and lanes=1; the int8 engine
(`python -m export CKPT --precision int8`) beside Q8_0. Each select is a cold request (use_cache=False).

Timing: every configuration runs one selection per rep, in an order rotated each rep (interleaved), after one
warm-up; seconds are medians over reps and "vs c4u default" the median of the per-rep ratios (c4u default seconds /
configuration seconds: above 1 is faster than c4u's default). Agreement: max |dP(A)| and same answers out of the
comparisons against the c4u engine of the same precision class (f32 vs fp32, Q8_0 vs int8).

Reason mode (--reason): c4u generates up to --reason-tokens per comparison; llama.cpp then generates greedily, per
pair, as many tokens as c4u's output holds (the first token may not close the thinking, as in c4u), so both decode
the same amount; agreement is the number of identical texts.

Without llama-cpp-python the script prints how to install it and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MIN_LLAMA_CPP = (0, 3, 36)  # llama_batch_ext and the mtmd bindings used by llama_cpp_judge.py
INSTALL_HINT = ("pip install 'c4u_engine[bench]' (or pip install 'llama-cpp-python>=0.3.36'; it builds llama.cpp "
                "from source, about 25 min on 2 cores)")
EXIT_MISSING = 2


def missing_dependency() -> str | None:
    """Why llama-cpp-python cannot be used here, or None."""
    try:
        import llama_cpp
        from llama_cpp import mtmd_cpp  # noqa: F401
    except ImportError as exc:
        return f"llama-cpp-python is not installed ({exc})"
    except (OSError, RuntimeError) as exc:  # raised by its ctypes loader when libllama does not load
        return f"llama-cpp-python is installed but its library does not load ({exc})"
    version = getattr(llama_cpp, "__version__", "0")
    try:
        found = tuple(int(x) for x in version.split(".")[:3])
    except ValueError:
        found = (0,)
    if found < MIN_LLAMA_CPP:
        return f"llama-cpp-python {version} is too old (need >= {'.'.join(map(str, MIN_LLAMA_CPP))})"
    return None


def pin_threads(n: int) -> str:
    """Run this process (c4u's lanes plan and llama.cpp's threads follow) on n of the cores it may use."""
    if not hasattr(os, "sched_getaffinity"):
        return f"{n} threads (no affinity control here)"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > n:
        os.sched_setaffinity(0, cores[:n])
        return f"{n} threads, pinned to cores {cores[:n]} of {len(cores)}"
    return f"{n} threads on {len(cores)} cores"


# -- the artifacts ---------------------------------------------------------------------------------------------
def c4u_exports(ckpt: Path, want_int8: bool) -> None:
    """onnx/ (fp32) and onnx-int8/ beside the checkpoint, through the project's export CLI (kept when present)."""
    root = HERE.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    jobs = [("onnx", [])] + ([("onnx-int8", ["--precision", "int8"])] if want_int8 else [])
    for out, extra in jobs:
        if (ckpt / out / "manifest.json").is_file():
            continue
        print(f"[setup] c4u export {out} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "export", str(ckpt), "--out", str(ckpt / out), "--no-check-tensorrt", *extra]
        subprocess.run(cmd, check=True, cwd=root, env=env, stdout=subprocess.DEVNULL)


# -- one configuration ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    seconds: float
    prob_a: dict[tuple[int, int], float]
    texts: dict[tuple[int, int], str] = field(default_factory=dict)
    tokens_decoded: int = 0


@dataclass
class Config:
    name: str
    kind: str  # "c4u" | "llama"
    precision: str  # "f32" | "int8"
    run: Callable[[str], Outcome]  # mode -> one timed selection


def c4u_config(name: str, engine, images, profile, precision: str, reason_tokens: int) -> Config:
    def run(mode: str) -> Outcome:
        t0 = time.perf_counter()
        sel = engine.select(images, profile, mode=mode, strategy="round_robin", use_cache=False,
                            max_new_tokens=reason_tokens)
        seconds = time.perf_counter() - t0
        comps = sel.comparisons
        return Outcome(seconds, {(c.first, c.second): c.prob_a for c in comps},
                       {(c.first, c.second): c.raw_text or "" for c in comps}, int(sel.stats.get("tokens_decoded", 0)))

    return Config(name, "c4u", precision, run)


def llama_config(name: str, judge, way: str, precision: str, images, pairs, text_for, answer_ids, tokenizer,
                 reason_plan: dict) -> Config:
    """way: "whole" | "reuse" | "batched". text_for(mode) -> the prompt text with mtmd markers; reason_plan holds
    {"counts": {(a, b): n}, "prefix": str, "ban": ids} once c4u's reasoning run set it."""
    ia, ib = answer_ids
    prob = lambda lg: float(1.0 / (1.0 + np.exp(float(lg[ib]) - float(lg[ia]))))  # noqa: E731

    def run(mode: str) -> Outcome:
        counts = reason_plan.get("counts", {}) if mode == "reason" else {}
        ban = reason_plan.get("ban", ()) if mode == "reason" else ()
        text = text_for(mode)
        t0 = time.perf_counter()
        if way == "whole":
            results = {p: judge.whole_prompt(text, images[p[0]], images[p[1]], counts.get(p, 0), ban_first=ban)
                       for p in pairs}
        else:
            encoded = judge.encode_images(images)
            try:
                parts = judge.split_prompt(text, images[:2])
                results = judge.reuse_selection(parts, encoded, pairs, batched=way == "batched", gen_tokens=counts,
                                                ban_first=ban)
            finally:
                judge.free_images(encoded)
        seconds = time.perf_counter() - t0
        texts = {}
        if mode == "reason":
            prefix = reason_plan.get("prefix", "")
            texts = {p: prefix + tokenizer.decode(g, skip_special_tokens=True) for p, (_, g) in results.items()}
        return Outcome(seconds, {p: prob(lg) for p, (lg, _) in results.items()}, texts,
                       sum(len(g) for _, g in results.values()))

    return Config(name, "llama", precision, run)


# -- measuring -------------------------------------------------------------------------------------------------
def measure(configs: list[Config], mode: str, reps: int, baseline: str) -> dict[str, dict]:
    """One warm-up each, then `reps` interleaved rounds (order rotated each round)."""
    for c in configs:
        print(f"[{mode}] warm-up {c.name}", file=sys.stderr, flush=True)
        c.run(mode)
    times: dict[str, list[float]] = {c.name: [] for c in configs}
    last: dict[str, Outcome] = {}
    for rep in range(reps):
        order = configs[rep % len(configs):] + configs[:rep % len(configs)]
        for c in order:
            out = c.run(mode)
            times[c.name].append(out.seconds)
            last[c.name] = out
            print(f"[{mode}] rep {rep + 1}/{reps} {c.name}: {out.seconds:.2f} s", file=sys.stderr, flush=True)
    base = times[baseline]
    return {c.name: {"seconds": statistics.median(times[c.name]), "all_seconds": times[c.name],
                     "vs_baseline": statistics.median(b / t for b, t in zip(base, times[c.name])),
                     "outcome": last[c.name]} for c in configs}


def agreement(a: Outcome, b: Outcome) -> tuple[float, int, int]:
    """(max |dP(A)|, same answers, comparisons) over the pairs both judged."""
    pairs = sorted(set(a.prob_a) & set(b.prob_a))
    dp = max(abs(a.prob_a[p] - b.prob_a[p]) for p in pairs)
    same = sum((a.prob_a[p] > 0.5) == (b.prob_a[p] > 0.5) for p in pairs)
    return dp, same, len(pairs)


def reference_for(c: Config, baseline: str, int8_baseline: str | None) -> str:
    """What a configuration's answers are compared with: c4u's int8 engine for int8 / Q8_0 (c4u's int8 engine
    itself against fp32), else c4u's fp32 default."""
    if c.precision == "int8" and int8_baseline and c.name != int8_baseline:
        return int8_baseline
    return baseline


# -- main ------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-cpp-dir", type=Path, help="llama.cpp's source tree, or the llama-cpp-python sdist's root "
                   "(holds vendor/llama.cpp/convert_hf_to_gguf.py); needed unless --workdir already holds the GGUFs")
    p.add_argument("--workdir", type=Path, help="where the checkpoint, its exports and GGUFs are built and reused")
    p.add_argument("--candidates", type=int, default=8, help="N creatives (round robin: N(N-1) comparisons)")
    p.add_argument("--reps", type=int, default=5, help="timed selections per configuration (interleaved)")
    p.add_argument("--threads", type=int, default=2, help="cores for every configuration")
    p.add_argument("--no-int8", action="store_true", help="skip Q8_0 and c4u's int8 engine")
    p.add_argument("--no-whole-q8", action="store_true", help="skip llama.cpp Q8_0 whole prompt per pair (slow)")
    p.add_argument("--torch", action="store_true", help="also c4u_engine's torch runner (fp32)")
    p.add_argument("--reason", action="store_true", help="also reason mode")
    p.add_argument("--reason-tokens", type=int, default=32, help="c4u's max_new_tokens in reason mode")
    p.add_argument("--reason-reps", type=int, help="reps in reason mode (default: --reps)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    why = missing_dependency()
    if why:
        print(f"bench_llama_cpp: {why}; install it with {INSTALL_HINT}", file=sys.stderr)
        return EXIT_MISSING
    threads = pin_threads(args.threads)

    import report
    import workload
    from llama_cpp_gguf import ConversionError, convert
    from llama_cpp_judge import LlamaCppJudge

    root = args.workdir or Path(tempfile.mkdtemp(prefix="c4u-llama-"))
    ckpt = workload.checkpoint(root)
    gguf_dir = root / "gguf"
    precisions = ["f32"] + ([] if args.no_int8 else ["q8_0"])
    ggufs = {}
    for outtype in precisions:
        have = all((gguf_dir / f"{k}-{outtype}.gguf").is_file() for k in ("model", "mmproj"))
        if not have and args.llama_cpp_dir is None:
            print("bench_llama_cpp: --llama-cpp-dir is needed to convert the checkpoint (llama.cpp's "
                  "convert_hf_to_gguf.py is not in the llama-cpp-python wheel): pip download --no-deps --no-binary "
                  ":all: llama-cpp-python==0.3.36 -d DIR, untar it, pass its root", file=sys.stderr)
            return EXIT_MISSING
        try:
            ggufs[outtype] = convert(ckpt, args.llama_cpp_dir, outtype, gguf_dir)
        except ConversionError as exc:
            print(f"bench_llama_cpp: {exc}", file=sys.stderr)
            return 1
    c4u_exports(ckpt, want_int8=not args.no_int8)

    from c4u_engine.api import Engine

    images = workload.images(args.candidates, seed=args.candidates)
    profile = workload.PROFILE
    engines = {"c4u onnxruntime fp32, default": Engine(ckpt, backend="onnxruntime"),
               "c4u onnxruntime fp32, lanes=1": Engine(ckpt, backend="onnxruntime", lanes=1)}
    if args.torch:
        import torch

        torch.set_num_threads(args.threads)
        engines["c4u torch fp32"] = Engine(ckpt, backend="torch")
    if not args.no_int8:
        engines["c4u onnxruntime int8, default"] = Engine(ckpt, backend="onnxruntime", precision="int8")
        engines["c4u onnxruntime int8, lanes=1"] = Engine(ckpt, backend="onnxruntime", precision="int8", lanes=1)
    baseline, int8_baseline = "c4u onnxruntime fp32, default", None if args.no_int8 else "c4u onnxruntime int8, default"
    engine = engines[baseline]
    session = engine.core.session
    pairs = [(a, b) for a in range(args.candidates) for b in range(args.candidates) if a != b]
    n_seq = args.candidates + 1  # batched reuse: [prefix], [prefix + A] and one sequence per other image

    judges = {t: LlamaCppJudge(*ggufs[t], threads=args.threads, n_seq=n_seq) for t in precisions}
    texts, prefixes, lengths = {}, {}, {}
    for mode in ("fast", "reason"):
        messages, prefix = engine.comparison_messages(images[0], images[1], profile, mode=mode)
        prefixes[mode] = prefix
        rendered = session.render(messages, prefix)
        texts[mode] = judges["f32"].prompt_text(rendered)
        ref_ids = session.tokenize(messages, prefix).ids.tolist()
        lengths[mode] = len(ref_ids)
        for t, judge in judges.items():
            ids = judge.token_view(texts[mode], images[:2], session.tokenizer.image_pad_id)
            if ids != ref_ids:
                first = next((i for i, (x, y) in enumerate(zip(ids, ref_ids)) if x != y), min(len(ids), len(ref_ids)))
                print(f"bench_llama_cpp: llama.cpp ({t}) tokenizes the {mode} prompt differently from the engine "
                      f"({len(ids)} vs {len(ref_ids)} ids, first difference at {first})", file=sys.stderr)
                return 1
    tokens_note = (f"llama.cpp tokenizes both prompts like the engine (fast {lengths['fast']}, reason "
                   f"{lengths['reason']} ids with the images)")
    print(f"[setup] {tokens_note}", file=sys.stderr)

    reason_plan: dict = {}
    configs = [c4u_config(name, eng, images, profile, "int8" if "int8" in name else "f32", args.reason_tokens)
               for name, eng in engines.items()]
    ways = [("whole", "whole prompt per pair"), ("reuse", "reuse, one pair at a time"),
            ("batched", "reuse, batched across pairs")]
    for t, judge in judges.items():
        label = {"f32": "f32", "q8_0": "Q8_0"}[t]
        for way, desc in ways:
            if t == "q8_0" and way == "whole" and args.no_whole_q8:
                continue
            configs.append(llama_config(f"llama.cpp {label}, {desc}", judge, way, "f32" if t == "f32" else "int8",
                                        images, pairs, texts.get, engine.answer_token_ids, session.tokenizer,
                                        reason_plan))

    import llama_cpp

    machine = f"{report.machine()}; {threads}; llama-cpp-python {llama_cpp.__version__}"
    results = {"fast": measure(configs, "fast", args.reps, baseline)}
    judged = set(results["fast"][baseline]["outcome"].prob_a)
    if judged != set(pairs):  # the comparison every side is checked on must be the same set
        print(f"bench_llama_cpp: c4u's round robin judged {len(judged)} pairs, expected all {len(pairs)} ordered "
              "pairs", file=sys.stderr)
        return 1
    agreements = {"fast": print_table("fast", results["fast"], configs, baseline, int8_baseline, args, machine,
                                      len(pairs))}
    if args.reason:
        ref = c4u_config(baseline, engine, images, profile, "f32", args.reason_tokens).run("reason")
        # c4u's outputs re-tokenized: the tokens each pair decoded (an end-of-turn token it stopped at is not
        # in the text, so llama.cpp may decode one token less there; the table shows both totals)
        reason_plan["counts"] = {p: len(session.tokenizer.encode(ref.texts[p][len(prefixes["reason"]):]))
                                 for p in pairs}
        reason_plan["prefix"] = prefixes["reason"]
        reason_plan["ban"] = tuple(engine.answer.empty_thinking)
        results["reason"] = measure(configs, "reason", args.reason_reps or args.reps, baseline)
        agreements["reason"] = print_table("reason", results["reason"], configs, baseline, int8_baseline, args,
                                           machine, len(pairs))
    for judge in judges.values():
        judge.close()
    for eng in engines.values():
        eng.close()
    if args.out:
        args.out.write_text(json.dumps({
            "machine": machine, "candidates": args.candidates, "comparisons": len(pairs), "reps": args.reps,
            "tokens": tokens_note,
            "modes": {mode: {name: {"seconds": r["seconds"], "all_seconds": r["all_seconds"],
                                    "vs_c4u_default": r["vs_baseline"], "agreement": agreements[mode][name],
                                    "tokens_decoded": r["outcome"].tokens_decoded}
                             for name, r in res.items()} for mode, res in results.items()}}, indent=2))
    return 0


def print_table(mode: str, res: dict, configs: list[Config], baseline: str, int8_baseline: str | None, args,
                machine: str, n_pairs: int) -> dict[str, str]:
    """Print the mode's markdown table; returns each configuration's agreement text."""
    import report

    rows, agreements = [], {}
    for c in configs:
        r = res[c.name]
        ref_name = reference_for(c, baseline, int8_baseline)
        if c.name == ref_name:
            agree = "(reference)"
        elif mode == "fast":
            dp, same, n = agreement(r["outcome"], res[ref_name]["outcome"])
            agree = f"max dP {dp:.1e}, {same}/{n} same answers vs {ref_name.removeprefix('c4u onnxruntime ')}"
        else:
            a, b = r["outcome"].texts, res[ref_name]["outcome"].texts
            same = sum(a[p] == b[p] for p in a if p in b)
            agree = f"{same}/{len(a)} texts equal vs {ref_name.removeprefix('c4u onnxruntime ')}"
        agreements[c.name] = agree
        tokens = [str(r["outcome"].tokens_decoded)] if mode == "reason" else []
        rows.append([c.name, f"{r['seconds']:.2f}", f"{r['vs_baseline']:.2f}x", agree, *tokens])
    headers = ["what", "seconds per selection", "vs c4u default", "P(A) agreement" if mode == "fast" else "agreement"]
    if mode == "reason":
        headers.append("tokens generated")
    reps = args.reps if mode == "fast" else (args.reason_reps or args.reps)
    print(f"\n{mode} mode: N = {args.candidates} round robin, both orders ({n_pairs} comparisons), medians of {reps} "
          f"interleaved reps" + (f", up to {args.reason_tokens} reasoning tokens" if mode == "reason" else ""))
    print(f"machine: {machine}\n")
    print(report.markdown_table(headers, rows), flush=True)
    return agreements


if __name__ == "__main__":
    sys.exit(main())
