"""Selection benchmark: c4u_engine.Engine.select against the loop a user would write with transformers.

    python benchmarks/bench_select.py --n 4 8 16 --modes fast reason --strategies knockout round_robin

Both sides use the same checkpoint (benchmarks/workload.py, ~40M parameters, random weights), the same 224x224
images and the same ordered pairs; the naive loop runs one full forward (fast) or one generate (reason) per pair
with the full prompt, exactly the messages Engine.comparison_messages hands out. Answers are checked to agree.
The engine runs with use_cache=False: each select is a cold request (request-local prefix reuse only).
Prints a markdown table (ratios, machine) and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
import workload  # noqa: E402


def machine() -> str:
    import torch

    return f"{report.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def naive_loop(judge, engine, images, pairs, mode: str, max_new_tokens: int) -> tuple[list, float, int]:
    """One transformers call per ordered pair, full prompt each time. Returns (outputs, seconds, tokens)."""
    out, tokens = [], 0
    t0 = time.perf_counter()
    for i, j in pairs:
        messages, prefix = engine.comparison_messages(images[i], images[j], workload.PROFILE, mode=mode)
        if mode == "fast":
            out.append(judge.next_logits(messages, prefix))
        else:
            out.append(judge.generate(messages, prefix, max_new_tokens=max_new_tokens))
    return out, time.perf_counter() - t0, tokens


def run(args) -> list[dict]:
    from c4u_engine.api import Engine
    from c4u_engine.reproduce import TransformersJudge

    root = Path(args.workdir or tempfile.mkdtemp(prefix="c4u-bench-"))
    ckpt = workload.checkpoint(root)
    params = workload.parameter_count(ckpt)
    if "onnxruntime" in args.backends and not (ckpt / "onnx" / "manifest.json").is_file():
        sys.path.append(str(Path(__file__).resolve().parent.parent))  # the export/ release tooling
        from export.onnx_export import export_engine

        export_engine(ckpt)
    engines = {b: Engine(ckpt, backend=b) for b in args.backends}
    engine = engines[args.backends[0]]
    judge = TransformersJudge(ckpt)
    id_a, id_b = engine.answer_token_ids
    patches = (workload.IMAGE_SIDE // 14) ** 2
    rows = []
    for n in args.n:
        imgs = workload.images(n, seed=n)
        for mode in args.modes:
            for strategy in args.strategies:
                times, sels = {}, {}
                for name, eng in engines.items():
                    eng.select(imgs[:2], workload.PROFILE, mode=mode, strategy=strategy, max_new_tokens=4)  # warm-up
                    t0 = time.perf_counter()
                    sels[name] = eng.select(imgs, workload.PROFILE, mode=mode, strategy=strategy,
                                            max_new_tokens=args.max_new_tokens, use_cache=False)
                    times[name] = time.perf_counter() - t0
                sel, t_engine = sels[args.backends[0]], times[args.backends[0]]
                same = all(s.ranking == sel.ranking and [c.answer for c in s.comparisons]
                           == [c.answer for c in sel.comparisons] for s in sels.values())
                pairs = [(c.first, c.second) for c in sel.comparisons]
                if args.naive_limit and len(pairs) > args.naive_limit:
                    sample = pairs[: args.naive_limit]
                else:
                    sample = pairs
                outs, t_naive, _ = naive_loop(judge, engine, imgs, sample, mode, args.max_new_tokens)
                t_naive_full = t_naive * len(pairs) / len(sample)
                agree = 0
                for c, o in zip(sel.comparisons, outs):
                    if mode == "fast":
                        p = 1 / (1 + np.exp(float(o[id_b]) - float(o[id_a])))
                        agree += abs(p - c.prob_a) < 1e-4
                    else:
                        messages, prefix = engine.comparison_messages(imgs[c.first], imgs[c.second],
                                                                      workload.PROFILE, mode=mode)
                        agree += c.raw_text == prefix + judge.tokenizer.decode(o, skip_special_tokens=True)
                st = sel.stats
                flops_engine = 2 * params["language"] * (st.get("tokens_prefilled", 0) + st.get("tokens_decoded", 0)) \
                    + 2 * params["vision"] * patches * st.get("images_encoded", 0)
                rows.append(dict(
                    n=n, mode=mode, strategy=strategy, comparisons=len(pairs), engine_s=t_engine,
                    backend_s={k: round(v, 3) for k, v in times.items()}, backends_agree=same,
                    naive_s=t_naive_full, naive_measured_pairs=len(sample), speedup=t_naive_full / t_engine,
                    answers_agree=f"{agree}/{len(sample)}", engine_gflops=flops_engine / t_engine / 1e9,
                    tokens_prefilled=st.get("tokens_prefilled", 0), tokens_decoded=st.get("tokens_decoded", 0),
                ))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows, params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--modes", nargs="+", default=["fast", "reason"])
    p.add_argument("--strategies", nargs="+", default=["knockout", "round_robin"])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--naive-limit", type=int, default=0,
                   help="time at most this many naive pairs and extrapolate linearly (0 = all)")
    p.add_argument("--backends", nargs="+", default=["torch"], help="engine runtimes to time (the first is the "
                   "one compared with the transformers loop)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0 = default)")
    p.add_argument("--workdir", help="where to build (and reuse) the benchmark checkpoint")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["C4U_ORT_THREADS"] = str(args.threads)
    peak = matmul_gflops()
    rows, params = run(args)
    print(f"\nmachine: {machine()}; measured fp32 matmul (1024^3): {peak:.1f} GFLOP/s")
    print(f"checkpoint: vision {params['vision'] / 1e6:.1f}M + language {params['language'] / 1e6:.1f}M parameters, "
          f"{workload.IMAGE_SIDE}x{workload.IMAGE_SIDE} images, backends {', '.join(args.backends)}\n")
    extra = args.backends[1:]
    print("| N | mode | strategy | comparisons | engine s | transformers loop s | speedup | answers agree "
          "| engine GFLOP/s (% of matmul) |" + "".join(f" {b} s (vs {args.backends[0]}) |" for b in extra))
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra))
    for r in rows:
        naive = f"{r['naive_s']:.2f}" + ("" if r["naive_measured_pairs"] == r["comparisons"]
                                         else f" (from {r['naive_measured_pairs']} pairs)")
        print(f"| {r['n']} | {r['mode']} | {r['strategy']} | {r['comparisons']} | {r['engine_s']:.2f} | {naive} "
              f"| {r['speedup']:.1f}x | {r['answers_agree']} | {r['engine_gflops']:.1f} "
              f"({100 * r['engine_gflops'] / peak:.0f}%) |"
              + "".join(f" {r['backend_s'][b]:.2f} ({r['engine_s'] / r['backend_s'][b]:.1f}x"
                        f"{', same picks' if r['backends_agree'] else ', DIFFERENT picks'}) |" for b in extra))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "matmul_gflops": peak, "params": params,
                                              "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
