"""Where the onnxruntime path's time goes: one selection under onnxruntime's profiler, per graph, per op type, per call,
and the engine's matmul GFLOP/s against the rate a plain large MatMul reaches in the same process.

    python benchmarks/bench_ort_profile.py [--model builtin|40m|150m|DIR] [--mode fast|reason] [--threads 2]

Workload: one N = 8 round-robin selection of 224 px creatives (benchmarks/workload.py), after one warm-up selection,
on one lane with `--threads` threads per call. FLOPs are counted from the profiler's shapes of every MatMul /
FusedMatMul / Gemm / MatMulIntegerToFloat node (2 x output elements x inner dimension: weights and attention alike).
"Peak" is a [1024, 1024] x [1024, 1024] MatMul in its own session with the same threads, best of 20 runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402
from report import machine, markdown_table  # noqa: E402

MATMUL_OPS = ("MatMul", "FusedMatMul", "Gemm", "MatMulIntegerToFloat", "MatMulInteger", "MatMulNBits")


def profiling_runner(path: Path, threads: int, out: Path):
    """An OnnxRuntimeRunner whose sessions run onnxruntime's profiler (one JSON file per session in `out`)."""
    from c4u_engine.runners.onnxruntime_runner import OnnxRuntimeRunner, _session_options

    class ProfilingRunner(OnnxRuntimeRunner):
        def _session(self, graph, options=None):
            options = _session_options(self._ort, threads)
            options.enable_profiling = True
            options.profile_file_prefix = str(out / graph)
            session = super()._session(graph, options)
            self.profiled = {**getattr(self, "profiled", {}), graph: session}
            return session

    return ProfilingRunner(path / "onnx" if (path / "onnx").is_dir() else path, intra_op_threads=threads)


def matmul_flops(event: dict) -> float:
    args = event.get("args", {})
    inputs, outputs = args.get("input_type_shape", []), args.get("output_type_shape", [])
    if not inputs or not outputs:
        return 0.0
    first = next(iter(inputs[0].values()))  # A is row-major in every export matmul (FusedMatMul transposes B)
    out = next(iter(outputs[0].values()))
    return 2.0 * float(np.prod(out)) * float(first[-1])


def peak_gflops(threads: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 1024
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        session.run(None, {"a": a, "b": a})
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="40m")
    p.add_argument("--mode", default="fast", choices=["fast", "reason"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "c4u-bench-lone"))
    args = p.parse_args()

    from c4u_engine.api import Engine

    named = args.model in ("builtin", "40m", "150m")
    path = workload.exported(args.model, Path(args.root)) if named else Path(args.model)
    out = Path(tempfile.mkdtemp(prefix="c4u-ort-profile-"))
    runner = profiling_runner(path, args.threads, out)
    engine = Engine(runner.engine_dir.path, runner=runner, lanes=1)
    options = dict(mode=args.mode, strategy="round_robin", use_cache=False, max_new_tokens=128)
    engine.select(workload.images(8, seed=2), workload.PROFILE, **options)  # warm-up (its events are dropped)
    t0 = time.perf_counter()
    engine.select(workload.images(8, seed=1), workload.PROFILE, **options)
    wall = time.perf_counter() - t0
    rows, flops, kernel_us = [], 0.0, 0.0
    calls = []
    for graph, session in runner.profiled.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        measured = runs[-len(runs) // 2:] if runs else []  # the second selection's calls (same count as the first)
        begin = measured[0]["ts"] if measured else 0
        nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                 and e["ts"] >= begin]
        per_op = collections.Counter()
        for e in nodes:
            op = e["args"]["op_name"]
            per_op[op] += e["dur"]
            if op in MATMUL_OPS:
                flops += matmul_flops(e)
        total = sum(per_op.values())
        kernel_us += total
        run_ms = [e["dur"] / 1e3 for e in measured]
        calls.append([graph, str(len(measured)), f"{sum(run_ms):.1f}", f"{np.median(run_ms) if run_ms else 0:.2f}",
                      f"{max(run_ms) if run_ms else 0:.2f}"])
        for op, us in per_op.most_common(args.top):
            rows.append([graph, op, f"{us / 1e3:.1f}", f"{100 * us / max(total, 1):.1f}%"])
    peak = peak_gflops(args.threads)
    print(f"machine: {machine()}; model {args.model}; {args.mode} N = 8 round robin; {args.threads} threads; "
          f"selection {wall:.2f} s wall\n")
    print(markdown_table(["graph", "calls", "total ms", "median ms/call", "max ms/call"], calls))
    print()
    print(markdown_table(["graph", "op type", "ms", "share of graph"], rows))
    print(f"\nmatmul work: {flops / 1e9:.2f} GFLOP; {flops / wall / 1e9:.1f} GFLOP/s over the selection's wall time, "
          f"{flops / (kernel_us / 1e6) / 1e9:.1f} GFLOP/s over kernel time; peak MatMul here {peak:.1f} GFLOP/s; "
          f"model calls {kernel_us / 1e6 / wall:.0%} of wall time")
    engine.close()


if __name__ == "__main__":
    main()
