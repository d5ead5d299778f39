"""Cascade (shared-prefix) decode attention against torch SDPA over gathered KV, one decode step of one layer.

For each case (groups x rows per group x shared slots, plus `--own` slots per row): the cascade kernel reads each
group's shared blocks once; the baseline gathers every row's blocks into a contiguous zero-padded past
(ops.paged_kv.gather) and runs torch's scaled_dot_product_attention with a length mask (GQA by repeat_interleave).
Both results are compared before anything is timed. On "cuda" the timings are CUDA events (median after warm-up);
on "cpu" wall clock of the CPU twin vs torch on CPU. Run:
    python benchmarks/bench_cascade_attention.py [--device cpu|cuda] [--dtype bfloat16] [--groups 8,16]
        [--rows-per-group 1,4,16] [--shared 600,2000] [--own 40] [--json results.json] [--dry-run]
Shapes default to Qwen2.5-VL-7B's decoder (28 query heads, 4 KV heads, head_dim 128). --dry-run checks the
arguments and runs one tiny case through both paths on CPU (what CI exercises). Prints the machine and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from c4u_engine.ops import cascade_attention, paged_kv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--groups", type=ints, default=[8, 16])
    p.add_argument("--rows-per-group", type=ints, default=[1, 4, 16])
    p.add_argument("--shared", type=ints, default=[600, 2000])
    p.add_argument("--own", type=int, default=40, help="each row's own slots (image B, question, reasoning)")
    p.add_argument("--q-heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--dry-run", action="store_true", help="one tiny case on CPU: checks the plumbing, times nothing")
    a = p.parse_args(argv)
    if a.q_heads % a.kv_heads or a.head_dim > cascade_attention.MAX_HEAD_DIM or a.own < 0 or a.reps < 1:
        p.error("q-heads must be a multiple of kv-heads, head-dim <= 128, own >= 0, reps >= 1")
    if a.dry_run:
        a.device, a.groups, a.rows_per_group, a.shared, a.own, a.reps = "cpu", [2], [3], [37], 5, 1
        a.q_heads, a.kv_heads, a.head_dim = 4, 2, 64
    a.dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    return a


def build(a, torch, groups: int, per_group: int, shared: int, dev):
    """Pools and tables for groups x per_group rows; shared blocks once per group, a private copy of a partial
    last shared block per row (a fork), then the row's own blocks."""
    bs = a.block_size
    need = lambda n: -(-n // bs)  # noqa: E731
    rows = groups * per_group
    full, partial = shared // bs, shared % bs != 0
    per_row = need(shared + a.own) - full
    num_blocks = groups * need(shared) + rows * per_row
    shared_tables = (np.arange(groups * need(shared), dtype=np.int32).reshape(groups, need(shared))
                     if shared else np.zeros((groups, 1), np.int32))
    tables = np.zeros((rows, need(shared + a.own)), np.int32)
    nxt = groups * need(shared)
    for r in range(rows):
        g = r // per_group
        tables[r, :full] = shared_tables[g, :full]
        tables[r, full:] = np.arange(nxt, nxt + per_row)
        nxt += per_row
    dtype = getattr(torch, a.dtype)
    gen = torch.Generator().manual_seed(0)
    shape = (max(num_blocks, 1), a.kv_heads, bs, a.head_dim)
    pool_k = torch.randn(shape, generator=gen).to(dtype)
    pool_v = torch.randn(shape, generator=gen).to(dtype)
    if partial:  # the forks' private copies hold the same shared slots
        for r in range(rows):
            src = shared_tables[r // per_group, full]
            pool_k[tables[r, full], :, : shared % bs] = pool_k[src, :, : shared % bs]
            pool_v[tables[r, full], :, : shared % bs] = pool_v[src, :, : shared % bs]
    q = torch.randn((rows, a.q_heads, a.head_dim), generator=gen).to(dtype)
    meta = dict(group_rows=np.arange(0, rows + 1, per_group, dtype=np.int32), shared_tables=shared_tables,
                shared_lens=np.full(groups, shared, np.int32), block_tables=tables,
                seq_lens=np.full(rows, shared + a.own, np.int32))
    return q.to(dev), pool_k.to(dev), pool_v.to(dev), meta


def main(argv=None) -> int:
    a = parse(argv)
    import torch

    dev = torch.device(a.device)
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2

    def timed(fn) -> float:
        return report.median_seconds(fn, a.reps, cuda_events=torch if cuda else None)

    ratio = a.q_heads // a.kv_heads
    itemsize = torch.empty((), dtype=getattr(torch, a.dtype)).element_size()
    rows_out = []
    for groups in a.groups:
        for per_group in a.rows_per_group:
            for shared in a.shared:
                q, pk, pv, meta = build(a, torch, groups, per_group, shared, dev)
                rows = q.shape[0]
                length = shared + a.own
                out_k = torch.empty((rows, a.kv_heads, length, a.head_dim), dtype=q.dtype, device=dev)
                out_v = torch.empty_like(out_k)
                mask = torch.ones((rows, 1, 1, length), dtype=torch.bool, device=dev)

                def cascade():
                    return cascade_attention.decode(q, pk, pv, **meta, device=a.device)

                def sdpa():
                    paged_kv.gather(pk, pv, meta["block_tables"], meta["seq_lens"], out_k, out_v, device=a.device)
                    k = out_k.repeat_interleave(ratio, dim=1)
                    v = out_v.repeat_interleave(ratio, dim=1)
                    return torch.nn.functional.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask)

                got, want = cascade().float(), sdpa().squeeze(2).float()
                err = float((got - want).abs().max())
                tol = {"float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}[a.dtype]
                if not err <= tol:
                    print(f"cascade and SDPA disagree by {err} (> {tol}) at groups={groups} rows/group={per_group} "
                          f"shared={shared}", file=sys.stderr)
                    return 1
                # split-KV of the shared part (ops.cascade_attention.split_count picks it on cuda) against one pass
                splits = cascade_attention.split_count(
                    groups, a.kv_heads, per_group * ratio, shared,
                    torch.cuda.get_device_properties(dev).multi_processor_count if cuda else 0)
                t_1 = timed(lambda: cascade_attention.decode(q, pk, pv, **meta, device=a.device, shared_splits=1)) \
                    if cuda and splits > 1 and not a.dry_run else float("nan")
                t_c = timed(cascade) if not a.dry_run else float("nan")
                t_s = timed(sdpa) if not a.dry_run else float("nan")
                # KV bytes the cascade must read at least: shared once per group, own slots once per row.
                gb = (groups * shared + rows * a.own) * a.kv_heads * a.head_dim * 2 * itemsize / 1e9
                rows_out.append(dict(groups=groups, rows_per_group=per_group, shared=shared, own=a.own,
                                     cascade_ms=t_c * 1e3, shared_splits=splits, one_split_ms=t_1 * 1e3,
                                     sdpa_gathered_ms=t_s * 1e3, speedup=t_s / t_c,
                                     cascade_gbps=gb / t_c, max_abs_diff=err))
    where = "CUDA events" if cuda else "wall clock, CPU twin vs torch CPU"
    print(f"machine: {report.machine()}" + (f"; GPU: {torch.cuda.get_device_name(dev)}" if cuda else ""))
    print(f"decode attention, {a.q_heads} q heads / {a.kv_heads} KV heads x {a.head_dim}, {a.dtype}, block size "
          f"{a.block_size}, +{a.own} own slots per row; median of {a.reps} ({where})" +
          (" [dry run: nothing timed]" if a.dry_run else ""))
    print(report.markdown_table(
        ["groups", "rows/group", "shared slots", "cascade ms", "gather+SDPA ms", "speedup", "cascade GB/s (min KV)",
         "max |diff|", "shared splits (1 split ms)"],
        [[r["groups"], r["rows_per_group"], r["shared"], f"{r['cascade_ms']:.3f}", f"{r['sdpa_gathered_ms']:.3f}",
          f"{r['speedup']:.2f}x", f"{r['cascade_gbps']:.1f}", f"{r['max_abs_diff']:.1e}",
          f"{r['shared_splits']}" + (f" ({r['one_split_ms']:.3f})" if r["shared_splits"] > 1 else "")]
         for r in rows_out]))
    if a.json is not None:
        a.json.write_text(json.dumps(dict(device=a.device, dtype=a.dtype, rows=rows_out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
