"""The sampling kernel as nvcc compiles it (PTX, no GPU needed): its float math must stay the CPU twin's, bit for bit.

nvcc contracts `a * b + c` into one fused multiply-add by default, and its expf/logf are not glibc's; either would
let the GPU draw another token than the CPU twin (built with -ffp-contract=off). c4u/sampling_math.h therefore uses
basic operations rounded once each through the _rn intrinsics (`mul.rn` / `add.rn` / `sub.rn` / `div.rn` in PTX,
which ptxas never fuses). This test fails if an edit brings back an fma, an unrounded (fusible) float mul/add/sub,
an approximate instruction (ex2.approx, lg2.approx) or a flush-to-zero variant into csrc/sampling.cu. Skipped where
nvcc is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NVCC = shutil.which("nvcc")


def float_instructions(ptx: str) -> list[str]:
    """Every f32/f64 arithmetic instruction of the PTX, with its modifiers (e.g. 'mul.rn.f32')."""
    ops = r"fma|mad|mul|add|sub|div|ex2|lg2|rcp|sqrt|rsqrt"
    return re.findall(rf"^\s*(?:@!?%p\d+\s+)?((?:{ops})\.[a-z0-9.]*f(?:32|64))\b", ptx, flags=re.MULTILINE)


def test_float_instructions_classifier():
    ptx = ("\tmul.rn.f32 \t%f1, %f2, %f3;\n\tfma.rn.f32 %f1;\n\t@%p3 add.f32 %f4;\n\tadd.s64 %rd1;\n"
           "\tex2.approx.ftz.f32 %f9;")
    assert float_instructions(ptx) == ["mul.rn.f32", "fma.rn.f32", "add.f32", "ex2.approx.ftz.f32"]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_sampling_kernel_has_no_fused_or_approximate_float_math(tmp_path):
    ptx_file = tmp_path / "sampling.ptx"
    subprocess.run([NVCC, "-arch=sm_90", "-std=c++17", f"-I{ROOT / 'csrc' / 'include'}", "-ptx",
                    str(ROOT / "csrc" / "sampling.cu"), "-o", str(ptx_file)], check=True, timeout=300)
    ptx = ptx_file.read_text()
    assert ".entry" in ptx and "sample_kernel" in ptx
    ops = float_instructions(ptx)
    assert {"mul.rn.f32", "add.rn.f32", "div.rn.f32"} <= set(ops)  # the kernel's math is there, rounded once each
    bad = sorted({op for op in ops if op.startswith(("fma", "mad", "ex2", "lg2", "rcp", "sqrt", "rsqrt"))
                  or ".rn." not in op or ".ftz" in op or ".approx" in op})
    assert bad == [], f"fusible, approximate or flush-to-zero float instructions in the sampling kernel: {bad}"
