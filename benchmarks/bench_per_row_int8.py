"""Which operators make per-row int8 fast on onnxruntime's CPU provider: one weight MatMul, every option timed.

    python benchmarks/bench_per_row_int8.py [--reps 15] [--threads 1]

Options (each a one-MatMul ONNX graph, x [M, K] float32 times a constant [K, N] weight, int8 per output channel):
- fp32: MatMul;
- per tensor: DynamicQuantizeLinear + MatMulInteger + scales (what quantize_dynamic writes; onnxruntime fuses it);
- per row, s8: |x| row max -> Div, Round, Cast(int8) -> MatMulInteger(s8, s8) -> Cast, row and column scales;
- per row, u8: the same shifted by 128 to uint8 with a scalar zero point 128 -> MatMulInteger(u8, s8);
- per row, u8, MatMulIntegerToFloat: the product, cast and column scales fused (com.microsoft), row scale after;
- per row, QuantizeLinear: QuantizeLinear with a per-axis (row) scale and zero point 128 does the divide, round,
  shift and saturate in one op, then MatMulIntegerToFloat (export/per_row_int8.py's choice).
Shapes: the ~40M checkpoint's largest decoder call (56 rows x 38 tokens, 512 -> 1536), a decode step (56 rows),
its vision MLP over 8 creatives (1024 patches, 384 -> 1024) and the built-in model's decoder call (2128, 256 -> 512).
Timed interleaved (one call of each in turn, --reps times); median and max |y - fp32|.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

SHAPES = {"40M decoder prefill": (2128, 512, 1536), "40M decode step": (56, 512, 1536),
          "40M vision MLP": (1024, 384, 1024), "built-in decoder prefill": (2128, 256, 512)}


def graphs(k: int, n: int, w: np.ndarray) -> dict:
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    amax = np.abs(w).max(0)
    ws = (amax / 127).astype(np.float32)
    wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
    c = lambda name, v: numpy_helper.from_array(np.asarray(v), name)  # noqa: E731
    node = helper.make_node

    def model(nodes, inits):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [None, n])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])

    common = [c("wq", wq), c("ws", ws), c("wz", np.zeros(n, np.int8)), c("eps", np.float32(1e-12)),
              c("c127", np.float32(127)), c("inv127", np.float32(1 / 127)), c("c128", np.float32(128)),
              c("z128", np.uint8(128)), c("one", np.float32(1)), c("ax1", np.array([1], np.int64))]
    row_scale = [node("Abs", ["x"], ["ax"]), node("ReduceMax", ["ax"], ["am"], axes=[1], keepdims=1),
                 node("Max", ["am", "eps"], ["am2"]), node("Div", ["am2", "c127"], ["rs"]),
                 node("Div", ["x", "rs"], ["xd"]), node("Round", ["xd"], ["xr"])]
    scale_out = [node("Cast", ["i"], ["f"], to=T.FLOAT), node("Mul", ["f", "rs"], ["f2"]),
                 node("Mul", ["f2", "ws"], ["y"])]
    return {
        "fp32": model([node("MatMul", ["x", "w"], ["y"])], [c("w", w)]),
        "per tensor (quantize_dynamic)": model(
            [node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["i"]), node("Cast", ["i"], ["f"], to=T.FLOAT),
             node("Mul", ["xs", "ws"], ["s"]), node("Mul", ["f", "s"], ["y"])], common),
        "per row, s8 x s8 MatMulInteger": model(
            row_scale + [node("Cast", ["xr"], ["xq"], to=T.INT8), node("MatMulInteger", ["xq", "wq"], ["i"])]
            + scale_out, common),
        "per row, u8 x s8 MatMulInteger": model(
            row_scale + [node("Add", ["xr", "c128"], ["xu"]), node("Cast", ["xu"], ["xq"], to=T.UINT8),
                         node("MatMulInteger", ["xq", "wq", "z128", "wz"], ["i"])] + scale_out, common),
        "per row, u8, MatMulIntegerToFloat": model(
            row_scale + [node("Add", ["xr", "c128"], ["xu"]), node("Cast", ["xu"], ["xq"], to=T.UINT8),
                         node("MatMulIntegerToFloat", ["xq", "wq", "one", "ws", "z128", "wz"], ["y2"],
                              domain="com.microsoft"), node("Mul", ["y2", "rs"], ["y"])], common),
        "per row, QuantizeLinear + MatMulIntegerToFloat (chosen)": model(
            [node("Abs", ["x"], ["ax"]), node("ReduceMax", ["ax"], ["am"], axes=[1], keepdims=0),
             node("Max", ["am", "eps"], ["am2"]), node("Mul", ["am2", "inv127"], ["rs1"]),
             node("Shape", ["rs1"], ["rows"]), node("Expand", ["z128", "rows"], ["zz"]),
             node("QuantizeLinear", ["x", "rs1", "zz"], ["xq"], axis=0),
             node("MatMulIntegerToFloat", ["xq", "wq", "one", "ws", "z128", "wz"], ["y2"], domain="com.microsoft"),
             node("Unsqueeze", ["rs1", "ax1"], ["rs"]), node("Mul", ["y2", "rs"], ["y"])], common),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: as each engine lane runs)")
    args = parser.parse_args()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3  # each option's graph carries the shared constants, some unused
    rows = []
    for shape_name, (m, k, n) in SHAPES.items():
        rng = np.random.default_rng(0)
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        sessions = {name: ort.InferenceSession(g.SerializeToString(), options) for name, g in graphs(k, n, w).items()}
        ref = x @ w
        samples: dict[str, list[float]] = {name: [] for name in sessions}
        for s in sessions.values():
            s.run(None, {"x": x})
        for _ in range(args.reps):
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"x": x})
                samples[name].append(time.perf_counter() - t0)
        base = statistics.median(samples["fp32"])
        for name, s in sessions.items():
            err = float(np.abs(s.run(None, {"x": x})[0] - ref).max())
            t = statistics.median(samples[name])
            rows.append([shape_name, f"{m} x {k} -> {n}", name, f"{t * 1e3:.2f} ms", f"{base / t:.2f}x", f"{err:.4f}"])
    print(report.markdown_table(["shape", "M x K -> N", "option", "median", "vs fp32", "max |y - fp32|"], rows))
    print(f"\nmachine: {report.machine()}; onnxruntime {ort.__version__}, {args.threads} thread(s); {args.reps} "
          f"interleaved reps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
