#!/usr/bin/env bash
# The GPU session's checklist (DESIGN.md, "Kernels without a GPU"): build with CUDA required, run the `cuda`-marked
# tests plainly (ops, and the whole engine in kernel mode: tests/engine/test_kernel_mode.py) and under
# compute-sanitizer (memcheck, racecheck), time every kernel with CUDA events (paged KV, sampling, embed merge,
# M-RoPE: GB/s vs peak), time cascade decode attention against torch SDPA over gathered KV, and run a
# Qwen2.5-VL-7B-shaped checkpoint (random bf16 weights made on the GPU) end to end against the transformers loop
# (benchmarks/bench_gpu_end_to_end.py: 448x448, N = 8, fast and reason, knockout and round robin; TFLOP/s vs bf16
# peak), writing everything to one results file (JSON beside it). Minutes, not hours: every step has a time limit
# (their sum, just under 8 min, keeps the suite under 8 minutes on an H200 once the machine is up). Everything it
# needs travels with the working tree (no downloads: checkpoints are built on the spot). Run from a venv that has
# the test extras and a CUDA build of torch:
#     bash benchmarks/gpu_suite.sh [--dry-run] [results file, default gpu_results.txt]
# --dry-run (any machine, no GPU): prints each step's command and limit, and runs the CPU-side steps for real
# (argument handling of the benchmarks, their tiny CPU cases including the end-to-end one, the cascade op tests on
# the CPU twin and the emulator). Not yet run on a GPU: the limits are estimates.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [[ "${1:-}" == "--dry-run" ]]; then dry=1; shift; fi
if [[ "${1:-}" == -* ]]; then echo "usage: bash benchmarks/gpu_suite.sh [--dry-run] [results file]" >&2; exit 2; fi
results=${1:-gpu_results.txt}
json_dir=$(dirname "$results")

# step LIMIT_SECONDS DESCRIPTION COMMAND...: runs COMMAND under `timeout` (prints it instead on --dry-run), then its
# exit status, so one failing step never hides the others.
step() {
  local limit=$1 what=$2
  shift 2
  echo "## $what (limit ${limit}s)"
  echo "\$ $*"
  if [[ $dry == 1 ]]; then return 0; fi
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "-> exit $?, $((SECONDS - t0))s"
}

# CPU-side steps: what --dry-run runs for real, and what a GPU run also checks first.
cpu_steps() {
  echo "## benchmark plumbing on CPU"
  python benchmarks/bench_cascade_attention.py --dry-run
  echo "-> exit $?"
  python benchmarks/bench_kernels.py --small --reps 1
  echo "-> exit $?"
  python benchmarks/bench_cascade_attention.py --device bogus >/dev/null 2>&1
  [[ $? == 2 ]] && echo "-> bad argument rejected (exit 2)" || echo "-> FAILED: a bad --device was accepted"
  python benchmarks/bench_gpu_end_to_end.py --tiny --json "$json_dir/end_to_end_tiny.json"
  echo "-> end-to-end tiny CPU run: exit $?"
  python benchmarks/bench_gpu_end_to_end.py --n 1 >/dev/null 2>&1
  [[ $? == 2 ]] && echo "-> end-to-end bad argument rejected (exit 2)" || echo "-> FAILED: end-to-end accepted --n 1"
}

{
  echo "# c4u_engine GPU suite, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)$([[ $dry == 1 ]] && echo ', DRY RUN')"
  if [[ $dry == 1 ]]; then
    cpu_steps
    timeout 300 python -m pytest -q -p no:cacheprovider tests/ops/test_cascade_attention.py
    echo "-> cascade op tests on CPU twin + emulator: exit $?"
  else
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  fi
  # --no-build-isolation: the GPU machine is offline; its image has scikit-build-core, pybind11, cmake and ninja.
  step 120 "build with CUDA required" env C4U_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 pip install -q -e . --no-deps \
    --no-build-isolation
  step 5 "the extension sees CUDA" python -c "from c4u_engine import _C; print('with_cuda', _C.with_cuda, 'archs', _C.cuda_archs)"
  step 45 "cuda-marked tests" python -m pytest -q -m cuda -p no:cacheprovider tests/ops tests/engine
  for tool in memcheck racecheck; do
    step 50 "compute-sanitizer --tool $tool on the cuda-marked op tests" \
      compute-sanitizer --tool "$tool" --error-exitcode 9 python -m pytest -q -x -m cuda -p no:cacheprovider tests/ops
  done
  step 30 "per-kernel CUDA-event timings (paged KV, sampling, embed merge, M-RoPE), GB/s vs peak" \
    python benchmarks/bench_kernels.py --device cuda --json "$json_dir/kernels.json"
  # Qwen2.5-VL-7B's decoder shape; 8 and 16 groups, 1 to 16 rows per group, 600 to 2,000 shared slots.
  step 60 "cascade vs SDPA over gathered KV, bf16, CUDA events" python benchmarks/bench_cascade_attention.py \
    --device cuda --dtype bfloat16 --groups 8,16 --rows-per-group 1,2,4,8,16 --shared 600,1200,2000 \
    --json "$json_dir/cascade_attention.json"
  step 115 "Qwen2.5-VL-7B-shaped bf16 end to end vs the transformers loop (448x448, N=8)" \
    python benchmarks/bench_gpu_end_to_end.py --device cuda --n 8 --image-side 448 --max-new-tokens 64 \
    --naive-limit 3 --peak-tflops 989 --json "$json_dir/end_to_end.json"
} 2>&1 | tee "$results"
