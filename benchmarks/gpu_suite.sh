#!/usr/bin/env bash
# The GPU session's checklist (DESIGN.md, "Kernels without a GPU"): build with CUDA required, run the `cuda`-marked
# tests plainly and under compute-sanitizer (memcheck, racecheck), and write everything to one results file.
# Minutes, not hours: GPU time is scarce. Run from a venv that has the test extras and a CUDA build of torch:
#     bash benchmarks/gpu_suite.sh [results file, default gpu_results.txt]
# No kernel timings yet: the op benchmarks (bench_paged_kv.py, bench_sampling.py, bench_embed_merge.py) time the
# CPU twins; CUDA-event timings for them are part 2's work.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-gpu_results.txt}
{
  echo "# c4u_engine GPU suite, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  C4U_CUDA=ON pip install -q -e ".[test]" --no-deps || { echo "build failed"; exit 1; }
  python -c "from c4u_engine import _C; print('with_cuda', _C.with_cuda, 'archs', _C.cuda_archs)"
  python -m pytest -q -m cuda -p no:cacheprovider tests/ops tests/engine
  echo "pytest -m cuda: exit $?"
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 python -m pytest -q -x -m cuda -p no:cacheprovider tests/ops
    echo "compute-sanitizer --tool $tool (tests/ops, cuda-marked): exit $?"
  done
} 2>&1 | tee "$results"
