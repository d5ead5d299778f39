"""Embedding merge and M-RoPE positions on CPU: the CPU twins (ops.embed_merge, ops.mrope) against what the engine
does today (numpy take + masked fill as the onnxruntime runner's embed; models.rope.mrope_position_ids), for a
prefill batch of comparison rows each holding two images. Run:
    python benchmarks/bench_embed_merge.py [--rows 16] [--hidden 1536] [--reps 20]
Prints the machine and a markdown table of medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from c4u_engine.models.rope import _row_positions
from c4u_engine.ops.embed_merge import embed_merge
from c4u_engine.ops.mrope import mrope_position_ids

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

IMG, MERGE = 151_655, 2



def rope_reference(ids: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """models.rope.mrope_position_ids without a ModelConfig (same per-row walk)."""
    out = np.zeros((3, *ids.shape), np.int64)
    next_image = 0
    for b in range(ids.shape[0]):
        out[:, b], next_image = _row_positions(ids[b], grids, next_image, IMG, MERGE)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    grid = (1, 16, 16)  # 224x224 creatives: 64 image tokens each
    n_img = grid[1] * grid[2] // MERGE**2
    row = [*rng.integers(0, 1000, 40), *[IMG] * n_img, *rng.integers(0, 1000, 12), *[IMG] * n_img,
           *rng.integers(0, 1000, 20)]
    ids = np.array([row] * a.rows, np.int64)
    grids = np.array([grid] * (2 * a.rows), np.int64)
    table = rng.standard_normal((152_000, a.hidden)).astype(np.float32)
    images = [rng.standard_normal((n_img, a.hidden)).astype(np.float32) for _ in range(2 * a.rows)]

    def numpy_embed():
        out = np.take(table, ids, axis=0)
        out[ids == IMG] = np.concatenate(images)
        return out

    np.testing.assert_array_equal(embed_merge(table, ids, images, IMG), numpy_embed())
    np.testing.assert_array_equal(mrope_position_ids(ids, grids, IMG, MERGE)[0], rope_reference(ids, grids))
    t_np = report.median_seconds(numpy_embed, a.reps)
    t_twin = report.median_seconds(lambda: embed_merge(table, ids, images, IMG), a.reps)
    t_rope = report.median_seconds(lambda: rope_reference(ids, grids), a.reps)
    t_mrope = report.median_seconds(lambda: mrope_position_ids(ids, grids, IMG, MERGE), a.reps)
    print(f"machine: {report.machine()}")
    print(f"{a.rows} rows x {ids.shape[1]} tokens (2 images of {n_img} tokens each), hidden {a.hidden}, float32")
    print(report.markdown_table(["op", "today's numpy ms", "CPU twin ms", "speedup"], [
        ["embed merge", f"{t_np * 1e3:.2f}", f"{t_twin * 1e3:.2f}", f"{t_np / t_twin:.1f}x"],
        ["M-RoPE positions", f"{t_rope * 1e3:.2f}", f"{t_mrope * 1e3:.2f}", f"{t_rope / t_mrope:.1f}x"],
    ]))


if __name__ == "__main__":
    main()
