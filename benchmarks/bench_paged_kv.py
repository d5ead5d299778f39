"""Paged KV on CPU: the fork of a comparison round (gather R entries into one contiguous past) through the CPU twin,
against the contiguous store's copy (numpy right-padded stack, as the onnxruntime runner's kv_stack), plus the
append of the entries and the same gather under the SIMT emulator (what CI pays per emulated call). Run:
    python benchmarks/bench_paged_kv.py [--rows 16] [--slots 300] [--layers 8] [--reps 20]
The shapes default to benchmarks/workload.py's model (8 layers, 2 KV heads, head_dim 64) and a [prefix + A] of
about 300 slots. Prints the machine and a markdown table of medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from c4u_engine.ops import paged_kv
from c4u_engine.ops.dispatch import emulated_why_not

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--slots", type=int, default=300)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()

    rng = np.random.default_rng(0)
    lens = (a.slots - rng.integers(0, a.block_size * 2, a.rows)).astype(np.int32)  # entries differ a little
    need = -(-lens // a.block_size)
    num_blocks = int(need.sum())
    ids = rng.permutation(num_blocks).astype(np.int32)
    tables = np.full((a.rows, int(need.max())), -1, np.int32)
    at = 0
    for r, n in enumerate(need):
        tables[r, :n] = ids[at : at + n]
        at += n
    shape = (num_blocks, a.heads, a.block_size, a.head_dim)
    pools = [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in range(a.layers)]
    entries = [[rng.standard_normal((1, a.heads, int(n), a.head_dim)).astype(np.float32) for n in lens]
               for _ in range(a.layers)]
    src = [np.zeros((a.rows, a.heads, int(lens.max()), a.head_dim), np.float32) for _ in range(a.layers)]
    for layer in range(a.layers):
        for r, n in enumerate(lens):
            src[layer][r, :, :n] = entries[layer][r][0]
    width = int(lens.max())
    out = [(np.empty((a.rows, a.heads, width, a.head_dim), np.float32),) * 2 for _ in range(a.layers)]
    zeros = np.zeros(a.rows, np.int32)

    def append(device: str = "cpu") -> None:
        for (pk, pv), s in zip(pools, src):
            paged_kv.append(pk, pv, tables, zeros, lens, s, s, device=device)

    def gather(device: str = "cpu") -> None:
        for (pk, pv), (ok, ov) in zip(pools, out):
            paged_kv.gather(pk, pv, tables, lens, ok, ov, device=device)

    def contiguous_stack() -> None:  # the contiguous store's fork: a zero-padded copy per layer, K and V
        for layer in range(a.layers):
            for _ in range(2):
                dst = np.zeros((a.rows, a.heads, width, a.head_dim), np.float32)
                for r, n in enumerate(lens):
                    dst[r, :, :n] = entries[layer][r][0]

    append()
    gather()
    for layer in range(a.layers):  # the timing means nothing unless the copies are right
        for r, n in enumerate(lens):
            np.testing.assert_array_equal(out[layer][0][r, :, :n], entries[layer][r][0])

    mb = 2 * a.layers * int(lens.sum()) * a.heads * a.head_dim * 4 / 1e6
    rows = []
    t_stack = report.median_seconds(contiguous_stack, a.reps)
    t_gather = report.median_seconds(gather, a.reps)
    t_append = report.median_seconds(append, a.reps)
    rows.append(["contiguous fork (numpy stack)", f"{t_stack * 1e3:.2f}", f"{mb / t_stack / 1e3:.1f}", "1.0x"])
    rows.append(["paged gather, CPU twin", f"{t_gather * 1e3:.2f}", f"{mb / t_gather / 1e3:.1f}",
                 f"{t_stack / t_gather:.1f}x"])
    rows.append(["paged append, CPU twin", f"{t_append * 1e3:.2f}", f"{mb / t_append / 1e3:.1f}", ""])
    if emulated_why_not() is None:
        t_emu = report.median_seconds(lambda: gather("emulated"), max(1, a.reps // 10))
        rows.append(["paged gather, CUDA source under the SIMT emulator", f"{t_emu * 1e3:.1f}",
                     f"{mb / t_emu / 1e3:.2f}", f"{t_stack / t_emu:.3f}x"])
    print(f"machine: {report.machine()}")
    print(f"fork of {a.rows} rows x {a.layers} layers, {a.heads} KV heads x head_dim {a.head_dim}, "
          f"{int(lens.min())}-{int(lens.max())} slots, block size {a.block_size}: {mb:.1f} MB of K+V per fork")
    print(report.markdown_table(["operation", "median ms", "GB/s", "vs contiguous fork"], rows))


if __name__ == "__main__":
    main()
