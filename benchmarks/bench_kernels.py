"""Per-kernel timings: paged KV append and gather, batched sampling, cascade decode attention. On "cuda", CUDA events
(median after a warm-up) with GB/s against the device's peak bandwidth (the datasheet figure of the card, chosen by
its name in gpu_peaks.py, e.g. H100 SXM 3350, H200 4800; none for an unknown card unless --peak-gbps gives one); on
"cpu" the CPU twins' wall clock (the same table without a peak, for a baseline and for CI). Run:
    python benchmarks/bench_kernels.py [--device cpu|cuda] [--small] [--reps 20] [--peak-gbps GBPS] [--json out.json]
--small: shapes a CI machine runs in seconds. Embed merge and M-RoPE are timed for a comparison batch (rows of two
448x448 images: 256 image tokens each); their calls include the host work the ops do per call (checking the ids,
walking the spans, uploading the metadata), which CUDA events then count too (the GPU idles meanwhile).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from c4u_engine.ops import paged_kv, sampling
from c4u_engine.ops.embed_merge import embed_merge
from c4u_engine.ops.mrope import mrope_position_ids

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from gpu_peaks import describe, peak_for  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--small", action="store_true")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--peak-gbps", type=float, default=None, help="default: the card's datasheet figure (gpu_peaks.py)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.reps < 1 or (a.peak_gbps is not None and a.peak_gbps <= 0):
        p.error("--reps >= 1 and --peak-gbps > 0")
    import torch

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    gpu_name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    known = peak_for(gpu_name) if cuda else None
    peak_gbps = a.peak_gbps if a.peak_gbps is not None else (known.gbps if known else None)

    def timed(fn) -> float:
        return report.median_seconds(fn, a.reps, cuda_events=torch if cuda else None)

    # A comparison round of Qwen2.5-VL-7B's one layer: 64 rows x ~1,300 slots, 4 KV heads x 128, bf16.
    rows, slots, heads, dim, bs = (8, 100, 2, 64, 16) if a.small else (64, 1300, 4, 128, 16)
    dtype = torch.bfloat16 if cuda else torch.float32
    need = -(-slots // bs)
    tables = np.arange(rows * need, dtype=np.int32).reshape(rows, need)
    pool = [torch.zeros((rows * need, heads, bs, dim), dtype=dtype, device=dev) for _ in range(2)]
    src = torch.randn((rows, heads, slots, dim), device=dev).to(dtype)
    zeros, lens = np.zeros(rows, np.int32), np.full(rows, slots, np.int32)
    out = [torch.empty_like(src) for _ in range(2)]
    kv_bytes = 2 * src.numel() * src.element_size()
    results = []

    def add(name: str, seconds: float, bytes_moved: float) -> None:
        gbps = bytes_moved / seconds / 1e9
        results.append(dict(kernel=name, ms=seconds * 1e3, gbps=gbps,
                            peak_pct=100 * gbps / peak_gbps if peak_gbps else None))

    add("paged_kv.append", timed(lambda: paged_kv.append(*pool, tables, zeros, lens, src, src, device=a.device)),
        2 * kv_bytes)
    add("paged_kv.gather", timed(lambda: paged_kv.gather(*pool, tables, lens, *out, device=a.device)), 2 * kv_bytes)
    vocab = 4096 if a.small else 151936
    logits = torch.randn((rows, vocab), device=dev) if cuda else np.random.default_rng(0).standard_normal(
        (rows, vocab)).astype(np.float32)
    lbytes = rows * vocab * 4
    add("sampling.sample argmax", timed(lambda: sampling.sample(logits, device=a.device)), lbytes)
    add("sampling.sample T=0.7 top-k 50 top-p 0.9",
        timed(lambda: sampling.sample(logits, temperature=0.7, top_k=50, top_p=0.9, seed=1, device=a.device)),
        lbytes)
    # Embedding merge and M-RoPE of a comparison batch: rows of [text, image A, text, image B, text].
    image_token, hidden = 151_655, (256 if a.small else 3584)
    grid = (1, 8, 8) if a.small else (1, 32, 32)  # 448x448: 32x32 patches, 256 tokens after the 2x2 merge
    n_img = grid[1] * grid[2] // 4
    rng = np.random.default_rng(0)
    row = [*rng.integers(0, 1000, 120), *[image_token] * n_img, *rng.integers(0, 1000, 12),
           *[image_token] * n_img, *rng.integers(0, 1000, 30)]
    ids = np.array([row] * rows, np.int64)
    table = torch.randn((152_064 if not a.small else 2048, hidden), device=dev).to(dtype)
    if a.small:
        ids[ids == image_token] = 2047
        image_token = 2047
    image_rows = [torch.randn((n_img, hidden), device=dev).to(dtype) for _ in range(2 * rows)]
    out_bytes = ids.size * hidden * table.element_size()
    add("embed_merge", timed(lambda: embed_merge(table, ids, image_rows, image_token, device=a.device)),
        2 * out_bytes)
    grids = np.array([grid] * (2 * rows), np.int64)
    add("mrope positions", timed(lambda: mrope_position_ids(ids, grids, image_token, 2, device=a.device)),
        3 * ids.size * 8)
    machine = report.machine() + (f"; GPU: {gpu_name}" if cuda else "")
    print(f"machine: {machine}")
    print(describe(gpu_name, known, a.peak_gbps, "GB/s") if cuda or a.peak_gbps else "peak: none on cpu")
    print(f"{rows} rows x {slots} slots, {heads} KV heads x {dim}, {str(dtype).removeprefix('torch.')}, block size "
          f"{bs}; vocab {vocab}; embed/M-RoPE: {rows} rows x {ids.shape[1]} tokens, hidden {hidden}; "
          f"median of {a.reps} ({'CUDA events' if cuda else 'wall clock, CPU twins'})")
    peak_header = f"% of {peak_gbps:.0f} GB/s" if peak_gbps else "% of peak"
    print(report.markdown_table(["kernel", "median ms", "GB/s", peak_header],
                                [[r["kernel"], f"{r['ms']:.3f}", f"{r['gbps']:.1f}",
                                  "n/a" if r["peak_pct"] is None else f"{r['peak_pct']:.1f}"] for r in results]))
    if a.json is not None:
        a.json.write_text(json.dumps(dict(machine=machine, device=a.device, peak_gbps=peak_gbps, rows=results),
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
