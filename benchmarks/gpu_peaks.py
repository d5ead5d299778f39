"""Datasheet peaks of the GPUs the benchmarks may meet, chosen by the device's name, so "% of peak" is against the
card that ran (an H100 SXM read against the H200's 4,800 GB/s looked ~30% worse than it was).

HBM bandwidth (GB/s) and dense bf16 tensor-core TFLOP/s (without 2:4 sparsity), from NVIDIA's datasheets. An
unknown name gets no peak: the benchmarks then print "n/a" instead of a percentage of a guessed number (pass
--peak-gbps / --peak-tflops to compare against a figure you know). Names are torch.cuda.get_device_name()'s (the
same as nvidia-smi's), e.g. "NVIDIA H100 80GB HBM3" for the SXM card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    card: str
    gbps: float  # HBM bandwidth, GB/s
    bf16_tflops: float  # dense bf16 tensor-core peak


# First match wins: the specific variants (NVL, PCIe) come before the name they extend.
_PEAKS: tuple[tuple[str, Peak], ...] = (
    (r"H200 NVL", Peak("H200 NVL", 4800.0, 835.0)),
    (r"H200", Peak("H200 SXM", 4800.0, 989.0)),
    (r"H100 NVL", Peak("H100 NVL", 3900.0, 835.0)),
    (r"H100 PCIe", Peak("H100 PCIe", 2000.0, 756.0)),
    (r"H100 80GB HBM3|H100 SXM", Peak("H100 SXM", 3350.0, 989.0)),
    (r"A100-SXM4-80GB", Peak("A100 SXM 80GB", 2039.0, 312.0)),
    (r"A100 80GB PCIe", Peak("A100 PCIe 80GB", 1935.0, 312.0)),
    (r"A100-(SXM4|PCIE)-40GB", Peak("A100 40GB", 1555.0, 312.0)),
    (r"L40S", Peak("L40S", 864.0, 362.0)),
)


def peak_for(device_name: str) -> Peak | None:
    """The datasheet peaks of the card of that name, or None when the name is not one we know."""
    for pattern, peak in _PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def describe(device_name: str, peak: Peak | None, override: float | None, unit: str) -> str:
    """One line for a results file: which peak the percentages are against, and where it came from."""
    if override is not None:
        return f"peak: {override:g} {unit} (given on the command line; device {device_name!r})"
    if peak is None:
        return f"peak: unknown for {device_name!r}: no % of peak reported (pass the peak to compare)"
    value = peak.gbps if unit == "GB/s" else peak.bf16_tflops
    return f"peak: {value:g} {unit} ({peak.card} datasheet, from the device name {device_name!r})"
