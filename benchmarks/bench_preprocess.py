"""Batched preprocess vs transformers' Qwen2VLImageProcessorPil on 16 images of 448x448 (the common case: one
campaign, one creative size). Run:
    pytest benchmarks/bench_preprocess.py -p no:cacheprovider --benchmark-columns=median,ops

The last test prints the speedups (median vs median) and the machine; the CUDA test needs a GPU and times the
kernels with CUDA events.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from c4u_engine.ops.dispatch import cuda_why_not
from c4u_engine.ops.preprocess import PreprocessParams, preprocess, preprocess_cuda

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

PARAMS = PreprocessParams()
N_IMAGES, SIDE = 16, 448
MEDIANS: dict[str, float] = {}


def machine() -> str:
    return f"{report.cpu_name()}, {os.cpu_count()} logical CPUs"


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8) for _ in range(N_IMAGES)]


@pytest.mark.benchmark(group="preprocess-16x448")
def test_c4u_preprocess_cpu(benchmark, images) -> None:
    pixel_values, grid = benchmark(preprocess, images, PARAMS)
    assert pixel_values.shape == (N_IMAGES * 32 * 32, PARAMS.patch_dim) and grid.shape == (N_IMAGES, 3)
    MEDIANS["c4u cpu"] = benchmark.stats.stats.median


@pytest.mark.benchmark(group="preprocess-16x448")
def test_transformers_pil(benchmark, images) -> None:
    processor = Qwen2VLImageProcessorPil(min_pixels=PARAMS.min_pixels, max_pixels=PARAMS.max_pixels)
    out = benchmark(processor, images=images, return_tensors="np")
    ours, _ = preprocess(images, PARAMS)
    np.testing.assert_array_equal(out["pixel_values"], ours)  # same numbers, or the timing means nothing
    MEDIANS["transformers pil"] = benchmark.stats.stats.median


@pytest.mark.cuda
@pytest.mark.benchmark(group="preprocess-16x448")
def test_c4u_preprocess_cuda(benchmark, images) -> None:
    reason = cuda_why_not()
    if reason is not None:
        pytest.skip(reason)
    import torch

    device_images = [torch.from_numpy(image).cuda() for image in images]

    def run() -> None:
        preprocess_cuda(device_images, PARAMS)
        torch.cuda.synchronize()

    benchmark(run)  # host view: launch overheads and sync included
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(50):
        start.record()
        preprocess_cuda(device_images, PARAMS)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    MEDIANS["c4u cuda (events)"] = statistics.median(times[5:])
    benchmark.extra_info["cuda_event_median_s"] = MEDIANS["c4u cuda (events)"]
    benchmark.extra_info["device"] = torch.cuda.get_device_name()


def test_report_speedup(capsys) -> None:
    if "transformers pil" not in MEDIANS:
        pytest.skip("run the whole file: the benchmarks above fill in the medians")
    lines = [f"machine: {machine()}", f"{N_IMAGES} images of {SIDE}x{SIDE}, median seconds per batch:"]
    for name, seconds in MEDIANS.items():
        ratio = MEDIANS["transformers pil"] / seconds
        lines.append(f"  {name:20s} {seconds * 1e3:9.3f} ms   {ratio:6.1f}x vs transformers pil")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
