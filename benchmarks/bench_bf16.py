"""bf16 on a CPU with AVX512-BF16: torch fp32 against torch bf16, and whether onnxruntime can run bf16 at all.

    python benchmarks/bench_bf16.py --models builtin 40m 150m --reps 5 --threads 2 --workdir /tmp/c4u-bf16

Three checkpoints: the built-in model (3.8M parameters, 112 px creatives), the ~40M one of benchmarks/workload.py
and a ~150M one from the same factory (language 12 layers x 1024, 16 heads / 4 KV heads, MLP 2816; vision as
workload.VISION), both with random weights and 224 px creatives, built once in --workdir and reused.

Workload: one lone request at a time, N = 8 round robin in fast mode (56 ordered comparisons, both orders: the
same pairs whatever the answers), use_cache=False (every selection cold); with --reason also N = 4 knockout in
reason mode (on --reason-models, the built-in model by default); with --clients C also C requests at once (8 creatives
each, on --clients-models). Engines, each interleaved with the others in one process (the order rotated
every repetition), medians of per-repetition paired ratios:

    onnxruntime fp32 (default)   Engine(ckpt): today's default CPU path, default settings (lanes=None)
    onnxruntime fp32, lanes=1    one scheduler whose calls get every core (what a lone request can have)
    torch fp32 / torch bf16      Engine(ckpt, backend="torch", dtype=...): bf16 weights cast at load
    onnxruntime fp32 + fastmath  (--fastmath) the session option onnxruntime has for bf16 GEMMs,
                                 "mlas.enable_gemm_fastmath_arm64_bfloat16", set on the fp32 graphs

Agreement of each engine with fp32 of its own backend and with the default: max |dP(A)| over the comparisons, the
same answer (A/B) in how many, the same winner, the same ranking. The bound bf16 is held to in the tests is
FLOAT_BOUND["bf16"] = 2^-5 on |dP(A)| (tests/export/test_precision.py).

onnxruntime bf16 (the probe): the checkpoint exported with --precision bf16 is loaded into a raw
onnxruntime.InferenceSession on the CPU execution provider (default options, with graph optimizations off, and with
the fastmath option); what happens and how long it takes is recorded, and what the engine itself does with such a
directory and with Engine(ckpt, precision="bf16").

torch's threads: torch.set_num_threads(--threads); onnxruntime keeps the engine's default plan (no $C4U_ORT_THREADS).
--engines keeps a subset (the default always stays: every ratio is against it).
--linear: torch F.linear GFLOP/s in fp32 and bf16 at a prefill's many rows and a decode step's few.
Prints markdown tables and the machine; --out writes everything as JSON (rewritten after each model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # export/ (release tooling, not installed)
import report  # noqa: E402
import workload  # noqa: E402

BF16_BOUND = 2**-5  # tests/export/test_precision.py FLOAT_BOUND["bf16"]: bf16 keeps 8 significant bits
DEFAULT = "onnxruntime fp32 (default)"
FASTMATH_KEY = "mlas.enable_gemm_fastmath_arm64_bfloat16"


# -- checkpoints ---------------------------------------------------------------------------------------------------


def checkpoint(name: str, workdir: Path) -> tuple[Path, list]:
    """The checkpoint directory and its 8 creatives; built (and exported to fp32 ONNX) on first use."""
    from tiny_checkpoint import make_test_image

    ckpt = workload.exported(name, workdir)  # (~150M: language 12 x 1024, workload.TEXT_150M)
    if name == "builtin":
        return ckpt, [make_test_image(112, 112, seed=500 + i) for i in range(8)]
    return ckpt, workload.images(8)


# -- agreement -----------------------------------------------------------------------------------------------------


def agreement(ours, reference) -> dict[str, Any]:
    """How far selection `ours` is from `reference`, comparison by comparison, matched by ordered pair: max
    |dP(A)|, how many answers (and, in reason mode, generated texts) are the same, whether the winner and the
    ranking are, and how many comparisons either played that the other did not (a knockout whose answers differ
    plays other pairs; a round robin never does)."""
    ref = {(c.first, c.second): c for c in reference.comparisons}
    pairs = [(c, ref[(c.first, c.second)]) for c in ours.comparisons if (c.first, c.second) in ref]
    out = {"max_dp": max((abs(a.prob_a - b.prob_a) for a, b in pairs), default=0.0),
           "same_answers": sum(a.answer == b.answer for a, b in pairs), "comparisons": len(pairs),
           "unmatched": len(ours.comparisons) + len(reference.comparisons) - 2 * len(pairs),
           "same_winner": ours.winner == reference.winner,
           "same_ranking": list(ours.ranking) == list(reference.ranking)}
    if any(a.raw_text is not None for a, _ in pairs):
        out["same_text"] = sum(a.raw_text == b.raw_text for a, b in pairs)
    return out


def paired_ratio(baseline: Sequence[float], other: Sequence[float]) -> float:
    """Median over repetitions of baseline / other: > 1 when `other` is faster."""
    return statistics.median(b / o for b, o in zip(baseline, other))


# -- engines -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def session_config(entries: dict[str, str]):
    """While open, onnxruntime sessions the runner creates carry these config entries. Wraps the runner's option
    factory (_session_options); if that name is gone the caller is told, not silently given the plain options."""
    from c4u_engine.runners import onnxruntime_runner as ort_runner

    original = getattr(ort_runner, "_session_options", None)
    if original is None:
        raise RuntimeError("onnxruntime_runner._session_options is gone: update session_config() in this script")

    def with_entries(*args, **kwargs):
        options = original(*args, **kwargs)
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        return options

    ort_runner._session_options = with_entries
    try:
        yield
    finally:
        ort_runner._session_options = original


def engines_for(ckpt: Path, fastmath: bool) -> dict[str, Callable[[], Any]]:
    from c4u_engine.api import Engine

    made: dict[str, Callable[[], Any]] = {
        DEFAULT: lambda: Engine(ckpt),
        "onnxruntime fp32, lanes=1": lambda: Engine(ckpt, lanes=1),
        "torch fp32": lambda: Engine(ckpt, backend="torch", dtype="float32"),
        "torch bf16": lambda: Engine(ckpt, backend="torch", dtype="bfloat16"),
    }
    if fastmath:
        def with_fastmath():
            with session_config({FASTMATH_KEY: "1"}):
                return Engine(ckpt, lanes=1)

        made["onnxruntime fp32, lanes=1, fastmath option"] = with_fastmath
    return made


SAME_BACKEND_FP32 = {"torch bf16": "torch fp32",
                     "onnxruntime fp32, lanes=1, fastmath option": "onnxruntime fp32, lanes=1"}


def measure(engines: dict[str, Any], images: list, reps: int, run: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timings of one workload (order rotated each repetition), and every engine's last selection."""
    labels = list(engines)
    for label in labels:  # warm-up (and the selection compared below: the same inputs give the same numbers)
        engines[label].select(images, workload.PROFILE, use_cache=False, **run)
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    selections: dict[str, Any] = {}
    for rep in range(reps):
        for label in labels[rep % len(labels):] + labels[: rep % len(labels)]:
            t0 = time.perf_counter()
            selections[label] = engines[label].select(images, workload.PROFILE, use_cache=False, **run)
            seconds[label].append(time.perf_counter() - t0)
    rows = {}
    for label in labels:
        fp32 = SAME_BACKEND_FP32.get(label)
        rows[label] = {
            "seconds": statistics.median(seconds[label]), "all_seconds": seconds[label],
            "vs_default": paired_ratio(seconds[DEFAULT], seconds[label]) if DEFAULT in seconds else None,
            "vs_own_fp32": paired_ratio(seconds[fp32], seconds[label]) if fp32 in seconds else None,
            "agreement_own_fp32": agreement(selections[label], selections[fp32]) if fp32 in selections else None,
            "agreement_default": agreement(selections[label], selections[DEFAULT]) if DEFAULT in selections else None,
        }
    return rows


def measure_clients(engines: dict[str, Any], clients: int, reps: int, run: dict[str, Any]) -> dict[str, Any]:
    """`clients` threads each submitting one selection of its own 8 creatives at once: wall seconds for all of them
    (median over `reps`, engines interleaved, order rotated) and the paired ratio against the default."""
    from concurrent.futures import ThreadPoolExecutor

    groups = [workload.images(8, seed=100 + c) for c in range(clients)]
    labels = list(engines)
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    with ThreadPoolExecutor(clients) as pool:
        for rep in range(reps):
            for label in labels[rep % len(labels):] + labels[: rep % len(labels)]:
                t0 = time.perf_counter()
                list(pool.map(lambda imgs, e=engines[label]: e.select(imgs, workload.PROFILE, use_cache=False,
                                                                      **run), groups))
                seconds[label].append(time.perf_counter() - t0)
    return {label: {"seconds": statistics.median(seconds[label]), "all_seconds": seconds[label],
                    "vs_default": paired_ratio(seconds[DEFAULT], seconds[label])} for label in labels}


def linear_rates(rows: Sequence[int], k: int = 1024, n: int = 2816, seconds: float = 0.5) -> list[dict[str, Any]]:
    """torch.nn.functional.linear GFLOP/s in fp32 and bf16 for [1, rows, k] x [n, k]^T (the 150M model's MLP up
    projection): the rate each precision's kernels give at a prefill's many rows and a decode step's few. Each
    shape and dtype runs for about `seconds` after three warm-up calls, the two dtypes interleaved three times."""
    import torch
    import torch.nn.functional as F

    out = []
    for m in rows:
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(3):
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                x, w = torch.randn(1, m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                for _ in range(3):
                    F.linear(x, w)
                calls, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / 3:
                    F.linear(x, w)
                    calls += 1
                rates[name].append(2 * m * k * n * calls / (time.perf_counter() - t0) / 1e9)
        fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
        out.append({"rows": m, "k": k, "n": n, "fp32_gflops": fp32, "bf16_gflops": bf16, "ratio": bf16 / fp32})
    return out


# -- onnxruntime and a bf16 graph ----------------------------------------------------------------------------------


def ort_bf16_probe(ckpt: Path, workdir: Path) -> dict[str, Any]:
    """Export bf16 graphs, then try to run them on onnxruntime's CPU execution provider, raw and through the
    engine. Every outcome recorded as it happened (error text, seconds to fail or to load)."""
    import onnxruntime as ort

    from c4u_engine.api import Engine
    from c4u_engine.errors import C4UError
    from c4u_engine.runners.onnx_ops import op_counts
    from export.onnx_export import export_engine

    out = workdir / f"{ckpt.name}-onnx-bf16"
    if not (out / "manifest.json").is_file():
        export_engine(ckpt, out, precision="bf16", log=lambda _: None)
    found: dict[str, Any] = {"engine_dir": str(out), "onnxruntime": ort.__version__,
                             "providers": ort.get_available_providers(), "sessions": []}
    variants = {"default options": {}, "graph optimizations off": {"opt": "off"},
                f"{FASTMATH_KEY}=1": {"config": {FASTMATH_KEY: "1"}}}
    for graph in ("vision", "decoder"):
        path = out / f"{graph}.onnx"
        found.setdefault("op_types", {})[graph] = sorted(op_counts(path))
        for name, variant in variants.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if variant.get("opt") == "off":
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            for key, value in variant.get("config", {}).items():
                options.add_session_config_entry(key, value)
            t0 = time.perf_counter()
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                outcome = f"loaded on {session.get_providers()}"
            except Exception as exc:  # what onnxruntime says is the finding
                outcome = f"{type(exc).__name__}: {str(exc).strip()}"
            found["sessions"].append({"graph": graph, "options": name, "outcome": outcome,
                                      "seconds": round(time.perf_counter() - t0, 3)})
    t0 = time.perf_counter()
    try:
        Engine(out, backend="onnxruntime").close()
        found["engine_onnxruntime"] = "ran"
    except C4UError as exc:
        found["engine_onnxruntime"] = f"{type(exc).__name__}: {exc}"
    found["engine_onnxruntime_seconds"] = round(time.perf_counter() - t0, 3)
    auto = Engine(ckpt, precision="bf16")
    found["engine_auto_bf16"] = f"backend {auto.backend}, precision {auto.precision}"
    auto.close()
    return found


# -- report --------------------------------------------------------------------------------------------------------


def machine() -> str:
    import onnxruntime
    import torch

    flags = sorted({f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                    for f in line.split() if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")}) \
        if Path("/proc/cpuinfo").is_file() else []
    return (f"{report.machine()} ({', '.join(flags) or 'no bf16 flags'}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}), "
            f"onnxruntime {onnxruntime.__version__}")


def _agreement_cell(a: dict[str, Any] | None) -> str:
    if a is None:
        return ""
    text = f", same text {a['same_text']}/{a['comparisons']}" if "same_text" in a else ""
    text += f", {a['unmatched']} pairs not in both" if a["unmatched"] else ""
    return (f"{a['max_dp']:.1e}, {a['same_answers']}/{a['comparisons']}, "
            f"winner {'same' if a['same_winner'] else 'DIFFERS'}{text}")


def table(results: dict[str, Any]) -> str:
    """One row per model, workload and engine: median seconds, paired ratios, agreement (max |dP(A)|, same
    answers, winner) against fp32 of the same backend and against the default."""
    headers = ["model", "workload", "engine", "median s", "vs default", "vs own fp32",
               "vs own fp32: max |dP(A)|, same answers, winner", "vs default: max |dP(A)|, same answers, winner",
               "within the bf16 bound (2^-5)"]
    rows = []
    for model, block in results["models"].items():
        for workload_name, engines in block["workloads"].items():
            for label, r in engines.items():
                default = r["agreement_default"]
                within = default is not None and default["max_dp"] <= BF16_BOUND and default["same_winner"]
                rows.append([
                    model, workload_name, label, f"{r['seconds']:.3g}",
                    f"{r['vs_default']:.2f}x" if r["vs_default"] else "",
                    f"{r['vs_own_fp32']:.2f}x" if r["vs_own_fp32"] else "",
                    _agreement_cell(r["agreement_own_fp32"]),
                    _agreement_cell(default), "yes" if within else "NO"])
    return report.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["builtin", "40m", "150m"], choices=["builtin", "40m", "150m"])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per engine (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--reason", action="store_true", help="also N = 4 knockout in reason mode")
    parser.add_argument("--reason-models", nargs="+", default=["builtin"], help="models the reason run is made on")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="reason mode's generation limit")
    parser.add_argument("--reason-reps", type=int, default=3)
    parser.add_argument("--fastmath", action="store_true", help=f"also onnxruntime fp32 with {FASTMATH_KEY}=1")
    parser.add_argument("--probe", action="store_true", help="try a bf16 export on onnxruntime's CPU provider")
    parser.add_argument("--clients", type=int, default=0, help="also this many concurrent requests (0: no)")
    parser.add_argument("--clients-models", nargs="+", default=["40m"], help="models the --clients run is made on")
    parser.add_argument("--clients-reps", type=int, default=2)
    parser.add_argument("--engines", nargs="+", help="only these engines (labels as printed; the default is always "
                        "kept, as every ratio is against it)")
    parser.add_argument("--linear", action="store_true", help="also torch linear GFLOP/s, fp32 and bf16")
    parser.add_argument("--workdir", help="where the checkpoints are built and reused")
    parser.add_argument("--out", help="write the results as JSON here (rewritten after each model)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="c4u-bf16-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "threads": args.threads, "reps": args.reps, "models": {}}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))

    for name in args.models:
        ckpt, images = checkpoint(name, workdir)
        params = workload.parameter_count(ckpt)
        block = results["models"][name] = {"checkpoint": str(ckpt), "parameters": params, "load_seconds": {},
                                           "workloads": {}}
        engines = {}
        for label, make in engines_for(ckpt, args.fastmath).items():
            if args.engines and label != DEFAULT and label not in args.engines:
                continue
            t0 = time.perf_counter()
            engines[label] = make()
            block["load_seconds"][label] = round(time.perf_counter() - t0, 2)
            assert label.split()[0] == engines[label].backend, (label, engines[label].backend)
        print(f"[{name}] {params}, engines loaded {block['load_seconds']}", file=sys.stderr, flush=True)
        block["workloads"]["fast N=8 rr"] = measure(engines, images, args.reps,
                                                    dict(mode="fast", strategy="round_robin"))
        save()
        if args.reason and name in args.reason_models:
            reasoning = {k: v for k, v in engines.items() if "fastmath" not in k}
            block["workloads"]["reason N=4 ko"] = measure(reasoning, images[:4], args.reason_reps,
                                                          dict(mode="reason", strategy="knockout",
                                                               max_new_tokens=args.max_new_tokens))
            save()
        if args.clients and name in args.clients_models:
            plain = {k: v for k, v in engines.items() if "fastmath" not in k}
            block["clients"] = measure_clients(plain, args.clients, args.clients_reps,
                                               dict(mode="fast", strategy="round_robin"))
            save()
        for engine in engines.values():
            engine.close()
        print(json.dumps({k: {e: round(r["seconds"], 3) for e, r in w.items()} for k, w in block["workloads"].items()}),
              file=sys.stderr, flush=True)
    if args.linear:
        results["linear"] = linear_rates([1, 4, 16, 64, 512, 2048])
        save()
    if args.probe:
        probe_ckpt, _ = checkpoint(args.models[0], workdir)
        results["onnxruntime_bf16_probe"] = ort_bf16_probe(probe_ckpt, workdir)
        save()

    print(f"\nmachine: {results['machine']}")
    print(f"command: python benchmarks/bench_bf16.py {shlex.join(sys.argv[1:] if argv is None else argv)}\n")
    for name, block in results["models"].items():
        p = block["parameters"]
        print(f"- {name}: vision {p['vision'] / 1e6:.1f}M + language {p['language'] / 1e6:.1f}M parameters; "
              f"engine load s {block['load_seconds']}")
    print()
    print(table(results))
    client_rows = [[model, args.clients, label, f"{r['seconds']:.3g}",
                    f"{r['vs_default']:.2f}x"]
                   for model, block in results["models"].items() for label, r in block.get("clients", {}).items()]
    if client_rows:
        print(f"\n{args.clients} clients at once, each N = 8 round robin fast (wall seconds for all of them):\n")
        print(report.markdown_table(["model", "clients", "engine", "median s", "vs default"], client_rows))
    if results.get("linear"):
        print("\ntorch F.linear [1, rows, 1024] x [2816, 1024]^T, GFLOP/s (medians of 3 interleaved runs):\n")
        print(report.markdown_table(["rows", "fp32", "bf16", "bf16 / fp32"], [
            [r["rows"], f"{r['fp32_gflops']:.1f}", f"{r['bf16_gflops']:.1f}", f"{r['ratio']:.2f}x"]
            for r in results["linear"]]))
    probe = results.get("onnxruntime_bf16_probe")
    if probe:
        print(f"\nonnxruntime {probe['onnxruntime']} ({', '.join(probe['providers'])}) on a bf16 export:")
        for s in probe["sessions"]:
            print(f"- {s['graph']}, {s['options']}: {s['outcome']} ({s['seconds']} s)")
        print(f"- Engine(bf16 dir, backend='onnxruntime'): {probe['engine_onnxruntime']}")
        print(f"- Engine(ckpt, precision='bf16'): {probe['engine_auto_bf16']}")
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
