"""One decode step on onnxruntime: the cache handed over as the frozen segment against the whole cache as past, and
the attention products with the query groups folded into rows against the groups as a broadcast axis.

    python benchmarks/bench_decode_step.py [--models builtin 40m] [--rows 8 64] [--slots 300] [--threads 1]

(a) The exported decoder, one step of `rows` rows after `slots` cached slots: "past" passes the whole cache as past
(the graph returns present = concat(past, new): a copy of every slot, what every step did before the frozen segment),
"frozen" passes all but the last 16 slots as the frozen segment (what the runner does between folds). Same graph, same
inputs, interleaved in one process; medians, and the max |difference| of the logits.
(b) The attention products of one decode step alone (plain onnxruntime MatMuls): q K^T and P V with the query groups
folded into the rows ([B, kvH, G, D] x [B, kvH, D, L], the export before) and as a broadcast axis ([B, kvH, G, 1, D]
x [B, kvH, 1, D, L], the export now: one query row per product).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402
from report import machine, markdown_table  # noqa: E402

RECENT = 16  # past slots in the "frozen" case: a step between two folds (FOLD_SLOTS = 32)


def paired(a, b, reps: int, inner: int = 5) -> tuple[float, float, float]:
    """Median seconds of a() and b() per call, and the median of the paired ratios a / b (interleaved)."""
    for f in (a, b):
        f()
    ta, tb = [], []
    for rep in range(reps):
        for f, acc in ((a, ta), (b, tb)) if rep % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            acc.append((time.perf_counter() - t0) / inner)
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb))


def decoder_rows(name: str, root: Path, rows: list[int], slots: int, threads: int, reps: int) -> list[list[str]]:
    import onnxruntime as ort

    from c4u_engine.runners.engine_dir import decoder_input_names, load_engine_dir

    engine = load_engine_dir(workload.exported(name, root) / "onnx")
    text = engine.config.text
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(engine.graph_path("decoder")), options, providers=["CPUExecutionProvider"])
    names = decoder_input_names(text.num_hidden_layers)
    out = []
    for b in rows:
        rng = np.random.default_rng(0)
        cache = [rng.standard_normal((b, text.num_key_value_heads, slots, text.head_dim), dtype=np.float32)
                 for _ in range(2 * text.num_hidden_layers)]
        head = {"inputs_embeds": rng.standard_normal((b, 1, text.hidden_size), dtype=np.float32),
                "position_ids": np.full((3, b, 1), slots, np.int64), "attention_mask": np.ones((b, slots + 1), bool),
                "logits_index": np.zeros((b, 1), np.int64)}
        empty = np.zeros((b, text.num_key_value_heads, 0, text.head_dim), np.float32)
        as_past = {**head, **dict(zip(names[4:], cache + [empty] * len(cache)))}
        split = [np.ascontiguousarray(t[:, :, slots - RECENT:]) for t in cache] + \
            [np.ascontiguousarray(t[:, :, : slots - RECENT]) for t in cache]
        as_frozen = {**head, **dict(zip(names[4:], split))}
        diff = float(np.abs(session.run(None, as_past)[0] - session.run(None, as_frozen)[0]).max())
        a, f, ratio = paired(lambda: session.run(None, as_past), lambda: session.run(None, as_frozen), reps)
        out.append([name, str(b), str(slots), f"{a * 1e3:.2f}", f"{f * 1e3:.2f}", f"{ratio:.2f}", f"{diff:.1e}"])
    return out


def product_rows(rows: list[int], slots: int, threads: int, reps: int) -> list[list[str]]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def session(nodes, inputs):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                               for n in inputs],
                                  [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    kv, groups, dim = 2, 2, 64  # the built-in model's heads: 4 query heads on 2 KV heads of 64
    transpose4 = helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])
    qk_rows = session([transpose4, helper.make_node("MatMul", ["q", "kt"], ["o"])], ["q", "k"])
    axis = helper.make_node("Constant", [], ["axis"], value=helper.make_tensor("axis", TensorProto.INT64, [1], [2]))
    qk_bcast = session([axis, helper.make_node("Unsqueeze", ["k", "axis"], ["k5"]),
                        helper.make_node("Transpose", ["k5"], ["kt"], perm=[0, 1, 2, 4, 3]),
                        helper.make_node("MatMul", ["q", "kt"], ["o"])], ["q", "k"])
    pv_rows = session([helper.make_node("MatMul", ["p", "v"], ["o"])], ["p", "v"])
    pv_bcast = session([axis, helper.make_node("Unsqueeze", ["v", "axis"], ["v5"]),
                        helper.make_node("MatMul", ["p", "v5"], ["o"])], ["p", "v"])
    out = []
    for b in rows:
        rng = np.random.default_rng(1)
        q = rng.standard_normal((b, kv, groups, 1, dim), dtype=np.float32)
        k = rng.standard_normal((b, kv, slots, dim), dtype=np.float32)
        p = rng.standard_normal((b, kv, groups, 1, slots), dtype=np.float32)
        for label, folded, broadcast in (
                ("q K^T", lambda: qk_rows.run(None, {"q": q.reshape(b, kv, groups, dim), "k": k}),
                 lambda: qk_bcast.run(None, {"q": q, "k": k})),
                ("P V", lambda: pv_rows.run(None, {"p": p.reshape(b, kv, groups, slots), "v": k}),
                 lambda: pv_bcast.run(None, {"p": p, "v": k}))):
            diff = float(np.abs(folded()[0].reshape(-1) - broadcast()[0].reshape(-1)).max())
            a, c, ratio = paired(folded, broadcast, reps, inner=20)
            out.append([label, str(b), str(slots), f"{a * 1e3:.3f}", f"{c * 1e3:.3f}", f"{ratio:.2f}", f"{diff:.1e}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["builtin", "40m"])
    ap.add_argument("--rows", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--slots", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "c4u-bench-lone"))
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.threads} thread(s); medians of {args.reps} interleaved pairs\n")
    rows = [r for name in args.models for r in decoder_rows(name, Path(args.root), args.rows, args.slots,
                                                              args.threads, args.reps)]
    print(markdown_table(["model", "rows", "slots", "whole cache as past ms", "frozen + 16 past ms",
                          "past / frozen", "max |d logits|"], rows))
    print()
    print(markdown_table(["product", "rows", "slots", "groups folded ms", "groups broadcast ms", "folded / broadcast",
                          "max |d|"], product_rows(args.rows, args.slots, args.threads, args.reps)))


if __name__ == "__main__":
    main()
