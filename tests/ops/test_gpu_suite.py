"""benchmarks/gpu_suite.sh as far as a CPU allows: --dry-run runs every CPU-side path for real and lists the GPU
steps; simulated runs without a device or with a CPU build must fail, naming the first failed precondition; the time
limits, parsed from the script, fit the GPU session; C4U_REQUIRE_CUDA=1 turns cuda skips into failures; the peaks
come from the GPU's name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_peaks import peak_for  # noqa: E402

# python3 is the venv's, as on the GPU machine (the suite never calls `python`)
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run_suite(*args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SUITE), *args], cwd=ROOT, env={**ENV, **env}, capture_output=True, text=True,
                          timeout=timeout)


def script_limits() -> dict[str, int]:
    """The LIMITS table of the script itself: step -> seconds."""
    text = SUITE.read_text()
    block = re.search(r"declare -A LIMITS=\((.*?)\n\)", text, flags=re.DOTALL)
    assert block, "gpu_suite.sh has no `declare -A LIMITS=(...)` table"
    return {name: int(seconds) for name, seconds in re.findall(r"\[([\w-]+)\]=(\d+)", block.group(1))}


def test_time_limits_cover_every_gpu_step_and_fit_480_seconds():
    limits = script_limits()
    text = SUITE.read_text()
    steps = re.search(r"GPU_STEPS=\(([^)]*)\)", text).group(1).split()
    assert sorted(steps) == sorted(limits)
    assert sum(limits.values()) <= 480, limits
    # every GPU step runs under its own entry of the table
    for step in steps:
        if step != "device":  # run inline: the device facts decide the architecture of the build
            assert f'run_step {step} ' in text and f'"${{LIMITS[{step}]}}"' in text, step
    assert 'timeout -k "$KILL_GRACE" "${LIMITS[device]}"' in text


def test_dry_run_runs_the_cpu_paths_and_lists_the_gpu_steps(tmp_path):
    results = tmp_path / "results.txt"
    proc = run_suite("--dry-run", str(results))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = results.read_text()
    assert "DRY RUN" in text and text.rstrip().endswith("RESULT: PASSED (dry run: CPU-side steps only)")
    for step in ("cpu-plumbing", "cpu-end-to-end-tiny", "cpu-cascade-op-tests", "cpu-arch-and-peaks"):
        assert re.search(rf"## {step} \(limit \d+s\)\n(.*\n)*?-> passed, \d+s", text), step
    assert "bad --device rejected (exit 2)" in text and "end-to-end --n 1 rejected (exit 2)" in text
    assert "| 2 | 3 | 37 |" in text  # the cascade benchmark's tiny case ran through both paths and agreed
    assert "| paged_kv.gather |" in text and "| sampling.sample argmax |" in text  # bench_kernels.py --small ran
    assert "| embed_merge |" in text and "| mrope positions |" in text
    assert "compute_cap 9.0 -> CMAKE_CUDA_ARCHITECTURES=90" in text
    assert "compute_cap 12.0 -> CMAKE_CUDA_ARCHITECTURES=120" in text
    assert "peak: 3350 GB/s (H100 SXM datasheet" in text and "peak: 4800 GB/s (H200 SXM datasheet" in text
    assert "peak: unknown for 'Some Future GPU'" in text
    # the end-to-end benchmark's tiny run: every mode x strategy, both engines, agreeing with transformers
    rows = json.loads((tmp_path / "end_to_end_tiny.json").read_text())["rows"]
    assert sorted((r["mode"], r["strategy"]) for r in rows) == [("fast", "knockout"), ("fast", "round_robin"),
                                                                 ("reason", "knockout"), ("reason", "round_robin")]
    for r in rows:
        assert r["kernels"]["same_answers_as_default"] is True and r["default"]["seconds"] > 0
        # the two engines share the weights, not the attention: only the kernels engine runs the kernels
        assert r["kernels"]["kernels_active"] is True and r["default"]["kernels_active"] is False
        assert r["kernels"]["peak_pct"] is None  # no peak on a CPU, so no made-up percentage
        if r["mode"] == "fast":
            assert r["transformers"]["max_prob_a_diff"] < 1e-4
        else:
            same, measured = r["transformers"]["same_text"].split("/")
            assert same == measured == str(r["transformers"]["measured_comparisons"])
            assert r["default"]["tokens_decoded"] > 0
    # every GPU step is listed with its limit and command
    limits = script_limits()
    assert f"limits summing to {sum(limits.values())}s" in text
    for step, seconds in limits.items():
        assert f"## {step} (limit {seconds}s)" in text, step
    gpu_part = text[text.index("## build (limit"):]
    for piece in ("-DC4U_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90", "C4U_REQUIRE_CUDA=1 python3 -m pytest",
                  "-m cuda tests/ops tests/engine", "bench_kernels.py --device cuda",
                  "bench_cascade_attention.py --device cuda --dtype bfloat16 --groups 8,16 --rows-per-group 1,2,4,8,16",
                  "bench_gpu_end_to_end.py --device cuda --n 8 --image-side 448 --max-new-tokens 64",
                  "--require-kernels", "sanitizer_canary.py", "Invalid __global__ read"):
        assert piece in gpu_part, piece
    # the sanitizers: our kernels only, the kernel tests only, and memcheck without torch's caching allocator
    memcheck = [line for line in gpu_part.splitlines() if "--tool memcheck" in line]
    racecheck = [line for line in gpu_part.splitlines() if "--tool racecheck" in line]
    assert len(memcheck) == 2 and len(racecheck) == 1 and "sanitizer_canary.py" in memcheck[0]  # canary, then tests
    for line in memcheck + racecheck:
        assert "--kernel-name kns=_ZN3c4u" in line and "--error-exitcode 9" in line
    for line in memcheck:
        assert "PYTORCH_NO_CUDA_MEMORY_CACHING=1 $san --tool memcheck" in line
    for line in memcheck[1:] + racecheck:
        assert line.endswith("-m cuda -x tests/ops")  # the kernel tests only
    # python3 only (the GPU machine guarantees no `python`), and no pip (it is offline)
    assert not re.search(r"(^|[\s;&|(])(python|pip|pip3)\s", SUITE.read_text(), flags=re.MULTILINE)
    # the header's digest is the one the caller computes on its side
    digest = run_suite("--sources-sha", timeout=60).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and f"sources sha256 {digest}" in text


def test_simulated_no_device_run_fails_at_the_device_step(tmp_path):
    results = tmp_path / "out" / "results.txt"
    proc = run_suite(str(results), timeout=120, C4U_SUITE_SIMULATE="no-device", GIT_DIR=str(tmp_path / "no-git"))
    assert proc.returncode == 1
    text = results.read_text()
    assert "commit: UNKNOWN: pass --commit SHA or C4U_COMMIT" in text  # .git did not travel, nothing passed in
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("RESULT: FAILED at device: nvidia-smi not found: no NVIDIA driver or GPU on this machine")
    for step in ("build", "extension", "cuda-tests", "canary", "memcheck", "racecheck", "kernels", "cascade",
                 "end-to-end"):
        assert re.search(rf"## {step} \(limit \d+s\)\n(.*\n)*?-> NOT RUN: needs step '[\w-]+'", text), step
    assert "not run: build extension cuda-tests canary memcheck racecheck kernels cascade end-to-end" in last
    assert "nvidia-smi not found" in proc.stdout  # the console says it too


def test_simulated_cpu_build_fails_at_the_extension_check(tmp_path):
    """nvidia-smi faked (an H100), no build: the extension check meets this tree's c4u_engine._C, a CPU build here
    (or, where CI builds with nvcc, a CUDA build without a device) and must stop the GPU steps."""
    results = tmp_path / "results.txt"
    proc = run_suite("--commit", "0123abc", str(results), timeout=120, C4U_SUITE_SIMULATE="cpu-build")
    assert proc.returncode == 1
    text = results.read_text()
    assert "SIMULATED cpu-build" in text.splitlines()[0] and "commit: 0123abc;" in text
    assert "-> passed: NVIDIA H100 80GB HBM3 (SIMULATED), compute capability -> CMAKE_CUDA_ARCHITECTURES=90" in text
    assert "-> SIMULATED: not built" in text
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("RESULT: FAILED at extension: exit 1 (precondition not met: ")
    assert "; failed: extension; not run: cuda-tests canary memcheck racecheck kernels cascade end-to-end" in last
    assert sorted(p.name for p in (tmp_path / "gpu_suite_steps").iterdir()) == ["02-extension.log"]


@pytest.mark.parametrize("args,env", [(["--bogus"], {}), (["--commit"], {}), (["a", "b"], {}),
                                      ([], {"C4U_SUITE_SIMULATE": "gpu"})])
def test_bad_invocations_are_refused(args, env):
    proc = run_suite(*args, timeout=30, **env)
    assert proc.returncode == 2 and ("usage" in proc.stderr or "C4U_SUITE_SIMULATE must be" in proc.stderr)


def test_require_cuda_turns_cuda_skips_into_failures():
    from c4u_engine import _C

    if _C.with_cuda and _C.cuda_device_count() >= 1:
        pytest.skip("CUDA runs here: no cuda test is skipped, so there is nothing for the switch to turn")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/ops/test_sampling.py"]
    plain = subprocess.run(cmd, cwd=ROOT, env={**ENV, "C4U_REQUIRE_CUDA": "0"}, capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode == 0 and "1 skipped" in plain.stdout
    required = subprocess.run(cmd, cwd=ROOT, env={**ENV, "C4U_REQUIRE_CUDA": "1"}, capture_output=True, text=True,
                              timeout=120)
    assert required.returncode == 1
    assert "C4U_REQUIRE_CUDA=1 but this cuda test was skipped: Skipped: cuda: " in required.stdout
    typo = subprocess.run(cmd, cwd=ROOT, env={**ENV, "C4U_REQUIRE_CUDA": "yes"}, capture_output=True, text=True,
                          timeout=120)
    assert typo.returncode == 4 and "C4U_REQUIRE_CUDA must be 1" in typo.stderr


def test_every_cuda_test_lives_where_the_suite_runs_them():
    marked = {p.relative_to(ROOT).parts[1] for p in (ROOT / "tests").rglob("test_*.py")
              if re.search(r"mark\.cuda\b", p.read_text())}
    assert marked and marked <= {"ops", "engine"}, marked


def test_peaks_come_from_the_device_name():
    h100, h200 = peak_for("NVIDIA H100 80GB HBM3"), peak_for("NVIDIA H200")
    assert (h100.card, h100.gbps, h100.bf16_tflops) == ("H100 SXM", 3350.0, 989.0)
    assert (h200.card, h200.gbps, h200.bf16_tflops) == ("H200 SXM", 4800.0, 989.0)
    assert peak_for("NVIDIA H100 PCIe").gbps == 2000.0 and peak_for("NVIDIA H100 NVL").gbps == 3900.0
    assert peak_for("NVIDIA H200 NVL").bf16_tflops == 835.0 and peak_for("NVIDIA A100-SXM4-80GB").gbps == 2039.0
    assert peak_for("NVIDIA GeForce RTX 4090") is None and peak_for("") is None


def test_end_to_end_with_require_kernels_fails_when_the_kernels_engine_falls_back(monkeypatch, tmp_path, capsys):
    """The suite's end-to-end step must not pass while its "kernels" engine times today's path under that name."""
    import bench_gpu_end_to_end

    from c4u_engine.train.engine_bridge import InMemoryRunner

    monkeypatch.setattr(InMemoryRunner, "use_kernels", lambda self, *args, **kwargs: "simulated: no kernels here")
    out = tmp_path / "e2e.json"
    argv = ["--tiny", "--modes", "fast", "--strategies", "knockout", "--naive-limit", "1", "--json", str(out)]
    assert bench_gpu_end_to_end.main([*argv, "--require-kernels"]) == 3
    assert "FAILED: --require-kernels" in capsys.readouterr().err
    report = json.loads(out.read_text())  # measured anyway, and marked
    assert report["kernels_fallback"] == {"kernels": "simulated: no kernels here"}
    assert report["rows"][0]["kernels"]["kernels_active"] is False
    assert bench_gpu_end_to_end.main(argv) == 0  # without the flag: a fallback is reported, not failed
