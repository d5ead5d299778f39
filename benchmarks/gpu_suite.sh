#!/usr/bin/env bash
# The GPU session's checklist (DESIGN.md, "Kernels without a GPU"), one results file, minutes not hours:
#   device      nvidia-smi sees a GPU; its compute capability picks the one CUDA architecture to build
#   build       the CUDA build of c4u_engine._C, in place (CMake; pybind11 from the venv or else torch's copy of
#               its headers; no pip, no network), for that architecture only
#   extension   _C was built with CUDA for that architecture and sees the device; torch sees it too
#   cuda-tests  the `cuda`-marked tests of tests/ops and tests/engine with C4U_REQUIRE_CUDA=1 (a skip is a failure)
#   canary      compute-sanitizer memcheck catches a deliberate overrun in our sampling kernel (proves the kernel
#               filter selects our kernels and that torch's caching allocator is off)
#   memcheck    compute-sanitizer memcheck over the `cuda`-marked kernel tests (tests/ops), our kernels only
#   racecheck   compute-sanitizer racecheck, the same tests and filter
#   kernels     per-kernel CUDA-event timings, GB/s against the card's datasheet peak (gpu_peaks.py)
#   cascade     cascade decode attention against torch SDPA over gathered KV, bf16
#   end-to-end  a Qwen2.5-VL-7B-shaped checkpoint (random bf16 weights made on the GPU) against the transformers
#               loop, with the kernels engine required to run its kernels
# Each step runs under `timeout -k` with its own limit (LIMITS below, 480 s in all: tests/ops/test_gpu_suite.py
# checks the sum), its output written to its own log as it goes (PYTHONUNBUFFERED=1) and appended to the results
# file when it ends, killed or not. A failed step is named in the results file; steps that need it are marked
# "not run"; the others still run, and the results file keeps everything measured. Exit 0 only if every step
# passed. Nothing CUDA has run yet: the limits are estimates (README.md, "GPU suite").
#
#   bash benchmarks/gpu_suite.sh [--dry-run] [--commit SHA] [results file, default gpu_results.txt]
#
# --commit SHA (or C4U_COMMIT=SHA): the commit the tree is at, written into the header (.git does not travel to
# the GPU machine; without either, `git rev-parse` where .git exists). The header also holds a sha256 over the
# source files; `bash benchmarks/gpu_suite.sh --sources-sha` prints the caller's, to tie the results to the tree.
# --dry-run (any machine, no GPU): runs every CPU-side path for real (the benchmarks' argument handling and tiny CPU
# cases, the end-to-end one included; the cascade op tests on the CPU twin and the emulator; the choice of
# architecture and peaks from sample device facts) and lists each GPU step with its command and limit.
# C4U_SUITE_SIMULATE (tests of this script, not for real runs): "no-device" behaves as if nvidia-smi were absent;
# "cpu-build" fakes an H100's nvidia-smi answer and skips the build, so the steps after it meet the extension already
# in c4u_engine/ (a CPU build here): both runs must fail, naming the first failed precondition.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash benchmarks/gpu_suite.sh [--dry-run] [--commit SHA] [results file] | --sources-sha"
# The tree's fingerprint for the header: sha256 over the source files (not build outputs), 16 hex digits.
sources_sha() {
  find csrc c4u_engine benchmarks tests CMakeLists.txt pyproject.toml -type f \( -name '*.py' -o -name '*.pyi' \
    -o -name '*.h' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.cu' -o -name '*.sh' -o -name 'CMakeLists.txt' \
    -o -name 'pyproject.toml' \) -not -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
    sha256sum | cut -c1-16
}
dry=0
commit=${C4U_COMMIT:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --sources-sha) sources_sha; exit 0 ;;  # the caller's side of the check: same tree, same digest
    --dry-run) dry=1; shift ;;
    --commit) [[ $# -ge 2 && -n $2 ]] || { echo "$usage" >&2; exit 2; }; commit=$2; shift 2 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -le 1 ]] || { echo "$usage" >&2; exit 2; }
simulate=${C4U_SUITE_SIMULATE:-}
case $simulate in
  ""|no-device|cpu-build) ;;
  *) echo "C4U_SUITE_SIMULATE must be no-device or cpu-build, got '$simulate'" >&2; exit 2 ;;
esac
results=${1:-gpu_results.txt}
out_dir=$(dirname "$results")
mkdir -p "$out_dir" || exit 2
steps_dir="$out_dir/gpu_suite_steps"
rm -rf "$steps_dir" && mkdir -p "$steps_dir" || exit 2
: >"$results" || exit 2

# Time limits in seconds (estimates for an H100 / H200; their sum stays <= 480 so the suite, machine start aside,
# fits one 10-minute command with room for the kill grace of each step).
declare -A LIMITS=(
  [device]=10 [build]=80 [extension]=15 [cuda-tests]=75 [canary]=20 [memcheck]=50 [racecheck]=40 [kernels]=30
  [cascade]=35 [end-to-end]=120
)
GPU_STEPS=(device build extension cuda-tests canary memcheck racecheck kernels cascade end-to-end)
KILL_GRACE=5

export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build: c4u_engine from this tree
# Our kernels' mangled names all start with _ZN3c4u (namespace c4u); torch's never do. compute-sanitizer matches
# kns= against the mangled name; the canary step proves the filter catches an error in one of ours.
SANITIZER_FILTER="--kernel-name kns=_ZN3c4u"

declare -A STATUS=()
ORDER=()  # step names in the order they were met
first_failure=""
current=""
step_pid=""

say() { echo "$*" | tee -a "$results"; }

# run_step NAME NEEDS LIMIT COMMAND: COMMAND (a bash string) under timeout -k, its output into its own log, then
# appended to the results file. NEEDS: a step that must have passed first ("" for none).
run_step() {
  local name=$1 needs=$2 limit=$3 cmd=$4
  local log="$steps_dir/$(printf '%02d' "${#ORDER[@]}")-$name.log"
  ORDER+=("$name")
  say ""
  say "## $name (limit ${limit}s)"
  say "\$ $cmd"
  if [[ -n $needs && ${STATUS[$needs]:-} != passed && ${STATUS[$needs]:-} != simulated ]]; then
    STATUS[$name]="not run"
    say "-> NOT RUN: needs step '$needs' (${STATUS[$needs]:-not run})"
    return 0
  fi
  current=$name
  local t0=$SECONDS rc
  # In the background and waited for, so a signal to the suite is handled at once (on_signal), not after the step.
  timeout -k "$KILL_GRACE" "$limit" bash -c "$cmd" </dev/null >"$log" 2>&1 &
  step_pid=$!
  wait "$step_pid"
  rc=$?
  current=""
  step_pid=""
  cat "$log" | tee -a "$results"
  if [[ $rc == 0 ]]; then
    STATUS[$name]=passed
    say "-> passed, $((SECONDS - t0))s"
  else
    STATUS[$name]=failed
    local why="exit $rc"
    [[ $rc == 124 || $rc == 137 ]] && why="TIMED OUT at its ${limit}s limit (exit $rc)"
    local last
    last=$(grep -v '^\s*$' "$log" | tail -n 1)
    [[ -z $first_failure ]] && first_failure="$name: $why${last:+ ($last)}"
    say "-> FAILED: $why, $((SECONDS - t0))s"
  fi
}

# The suite killed from outside (the machine's command limit): keep the running step's output and say so.
on_signal() {
  if [[ -n $step_pid ]]; then
    kill -TERM "$step_pid" 2>/dev/null  # timeout passes it on to the step's processes
    sleep 1
  fi
  if [[ -n $current ]]; then
    local log
    log=$(ls "$steps_dir"/*-"$current".log 2>/dev/null | tail -n 1)
    [[ -n $log ]] && cat "$log" >>"$results"
    echo "-> INTERRUPTED: the suite was killed during step '$current'" >>"$results"
  fi
  echo "RESULT: INTERRUPTED${current:+ during $current}" >>"$results"
  exit 143
}
trap on_signal TERM INT HUP

sources_sha=$(sources_sha)
if [[ -z $commit ]]; then
  commit=$(git rev-parse --short HEAD 2>/dev/null) || commit=""
  [[ -n $commit ]] && commit="$commit (git rev-parse)"
fi
say "# c4u_engine GPU suite, $(date -u +%FT%TZ)$([[ $dry == 1 ]] && echo ', DRY RUN')${simulate:+, SIMULATED $simulate}"
say "commit: ${commit:-UNKNOWN: pass --commit SHA or C4U_COMMIT (.git did not travel)}; sources sha256 $sources_sha"
say "host: $(hostname), $(nproc) CPUs; $(python3 --version 2>&1); results: $results, step logs: $steps_dir/"

# Device facts: "name, compute_cap, driver, memory" from nvidia-smi (faked under C4U_SUITE_SIMULATE=cpu-build).
device_query() {
  case $simulate in
    no-device) return 127 ;;
    cpu-build) echo "NVIDIA H100 80GB HBM3 (SIMULATED), 9.0, 0.0 (simulated), 81559 MiB"; return 0 ;;
  esac
  command -v nvidia-smi >/dev/null || return 127
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
}
# "9.0" -> "90"; anything but a digit, a dot and digits is refused.
arch_of() { [[ $1 =~ ^([0-9]+)\.([0-9]+)$ ]] && echo "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"; }

if [[ $dry == 1 ]]; then
  run_step cpu-plumbing "" 120 "python3 benchmarks/bench_cascade_attention.py --dry-run && \
python3 benchmarks/bench_kernels.py --small --reps 1 && \
{ python3 benchmarks/bench_cascade_attention.py --device bogus >/dev/null 2>&1; rc=\$?; \
[[ \$rc == 2 ]] && echo 'bad --device rejected (exit 2)' || { echo \"a bad --device was not rejected (exit \$rc)\"; exit 1; }; } && \
{ python3 benchmarks/bench_gpu_end_to_end.py --n 1 >/dev/null 2>&1; rc=\$?; \
[[ \$rc == 2 ]] && echo 'end-to-end --n 1 rejected (exit 2)' || { echo \"end-to-end accepted --n 1 (exit \$rc)\"; exit 1; }; }"
  run_step cpu-end-to-end-tiny "" 240 "python3 benchmarks/bench_gpu_end_to_end.py --tiny --require-kernels \
--json '$out_dir/end_to_end_tiny.json'"
  run_step cpu-cascade-op-tests "" 300 \
    "python3 -m pytest -q -p no:cacheprovider tests/ops/test_cascade_attention.py"
  run_step cpu-arch-and-peaks "" 30 "$(declare -f arch_of); \
for cap in 9.0 8.0 12.0; do echo \"compute_cap \$cap -> CMAKE_CUDA_ARCHITECTURES=\$(arch_of \$cap)\"; done; \
arch_of 9 >/dev/null && { echo 'a malformed compute_cap was accepted'; exit 1; }; \
python3 -c \"import sys; sys.path.insert(0, 'benchmarks'); from gpu_peaks import describe, peak_for
for n in ('NVIDIA H100 80GB HBM3', 'NVIDIA H200', 'NVIDIA H100 PCIe', 'Some Future GPU'):
    print(describe(n, peak_for(n), None, 'GB/s')); print(describe(n, peak_for(n), None, 'TFLOP/s'))\""
  say ""
  say "## GPU steps (not run in a dry run), limits summing to $(( $(IFS=+; echo "${LIMITS[*]}") ))s:"
  for s in "${GPU_STEPS[@]}"; do say "- $s (limit ${LIMITS[$s]}s)"; done
fi

# The GPU steps. In a dry run they are only listed (above and with their commands below).
arch=""
gpu_name=""
if [[ $dry == 0 ]]; then
  ORDER+=(device)
  say ""
  say "## device (limit ${LIMITS[device]}s)"
  facts=$(timeout -k "$KILL_GRACE" "${LIMITS[device]}" bash -c "$(declare -f device_query); simulate='$simulate'; device_query" 2>&1)
  rc=$?
  say "\$ nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader"
  [[ -n $facts ]] && say "$facts"
  gpu_name=$(echo "$facts" | head -n 1 | cut -d, -f1)
  arch=$(arch_of "$(echo "$facts" | head -n 1 | cut -d, -f2 | tr -d ' ')")
  if [[ $rc == 127 ]]; then
    STATUS[device]=failed; first_failure="device: nvidia-smi not found: no NVIDIA driver or GPU on this machine"
  elif [[ $rc != 0 || -z $facts ]]; then
    STATUS[device]=failed; first_failure="device: nvidia-smi failed or listed no GPU (exit $rc)"
  elif [[ -z $arch ]]; then
    STATUS[device]=failed; first_failure="device: no compute capability in nvidia-smi's answer"
  elif [[ $(echo "$facts" | wc -l) -gt 1 ]]; then
    STATUS[device]=passed; say "(several GPUs: the first one's architecture, $arch, is built; tests use device 0)"
  else
    STATUS[device]=passed
  fi
  if [[ ${STATUS[device]} == passed ]]; then
    say "-> passed: $gpu_name, compute capability -> CMAKE_CUDA_ARCHITECTURES=$arch"
  else
    say "-> FAILED: ${first_failure#device: }"
  fi
else
  arch=90
  say ""
  say "## device (limit ${LIMITS[device]}s)"
  say "\$ nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader"
  say "-> dry run: CMAKE_CUDA_ARCHITECTURES comes from compute_cap (an H100 or H200 answers 9.0 -> 90)"
fi

# pybind11's CMake files from the venv, or else the pybind11 headers torch ships (CMakeLists.txt, C4U_PYBIND11_INCLUDE).
build_cmd="for tool in nvcc cmake; do command -v \$tool >/dev/null || { echo \"\$tool not found (the CUDA build needs it)\"; exit 1; }; done
if pyb=\$(python3 -m pybind11 --cmakedir 2>/dev/null); then pyb=-Dpybind11_DIR=\$pyb; echo \"pybind11: \$pyb\"
else pyb=-DC4U_PYBIND11_INCLUDE=\$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), \"include\"))') \
|| { echo 'neither pybind11 nor torch is importable by python3: no pybind11 headers to build with'; exit 1; }
echo \"pybind11 not installed: the headers torch ships (\$pyb)\"; fi
gen=\$(command -v ninja >/dev/null && echo '-G Ninja')
cmake -S . -B build/gpu-sm$arch \$gen -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=\$(command -v python3) \$pyb \
-DC4U_CUDA=ON -DC4U_SIMT_EMULATION=OFF -DCMAKE_CUDA_ARCHITECTURES=$arch \
&& cmake --build build/gpu-sm$arch -j \$(nproc) && cp build/gpu-sm$arch/_C*.so c4u_engine/ && ls -l c4u_engine/_C*.so"
extension_cmd="python3 - <<'EOF'
import sys
from c4u_engine import _C
import torch
checks = [  # (precondition, holds): the first that does not hold stops the suite's GPU steps
    ('c4u_engine._C is a CUDA build (with_cuda=' + str(_C.with_cuda) + ')', bool(_C.with_cuda)),
    ('c4u_engine._C has code for sm_$arch (cuda_archs=' + repr(_C.cuda_archs) + ')', '$arch' in _C.cuda_archs.split(',')),
    ('c4u_engine._C sees a CUDA device (cuda_device_count=' + str(_C.cuda_device_count()) + ')', _C.cuda_device_count() >= 1),
    ('torch ' + torch.__version__ + ' is a CUDA build (torch.version.cuda=' + str(torch.version.cuda) + ')', torch.version.cuda is not None),
    ('torch sees a CUDA device', torch.cuda.is_available()),
]
for what, holds in checks:
    print(('ok: ' if holds else 'precondition not met: ') + what)
    if not holds:
        sys.exit(1)
print('device 0:', _C.cuda_device_name(0), '| torch', torch.__version__, 'CUDA', torch.version.cuda)
EOF"
pytest_cuda="python3 -m pytest -q -p no:cacheprovider -m cuda"  # run with C4U_REQUIRE_CUDA=1: a skip fails
sanitizer="\$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)"
find_sanitizer="san=$sanitizer; [[ -n \$san ]] || { echo 'compute-sanitizer not found (PATH, /usr/local/cuda)'; exit 1; }"
canary_cmd="$find_sanitizer
PYTORCH_NO_CUDA_MEMORY_CACHING=1 \$san --tool memcheck $SANITIZER_FILTER --error-exitcode 9 python3 benchmarks/sanitizer_canary.py \
>'$steps_dir/canary-output.txt' 2>&1; rc=\$?; cat '$steps_dir/canary-output.txt'
if [[ \$rc == 9 ]] && grep -q 'Invalid __global__ read' '$steps_dir/canary-output.txt'; then
  echo 'canary caught: the filter selects c4u kernels and torch caching is off'
else
  echo \"canary NOT caught (exit \$rc): a clean memcheck of the kernel tests would mean nothing\"; exit 1
fi"
memcheck_cmd="$find_sanitizer
C4U_REQUIRE_CUDA=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \$san --tool memcheck $SANITIZER_FILTER --error-exitcode 9 \
$pytest_cuda -x tests/ops"
racecheck_cmd="$find_sanitizer
C4U_REQUIRE_CUDA=1 \$san --tool racecheck $SANITIZER_FILTER --error-exitcode 9 $pytest_cuda -x tests/ops"
cuda_tests_cmd="C4U_REQUIRE_CUDA=1 $pytest_cuda tests/ops tests/engine"
kernels_cmd="python3 benchmarks/bench_kernels.py --device cuda --json '$out_dir/kernels.json'"
# Qwen2.5-VL-7B's decoder shape; 8 and 16 groups, 1 to 16 rows per group, 600 to 2,000 shared slots.
cascade_cmd="python3 benchmarks/bench_cascade_attention.py --device cuda --dtype bfloat16 --groups 8,16 \
--rows-per-group 1,2,4,8,16 --shared 600,1200,2000 --json '$out_dir/cascade_attention.json'"
e2e_cmd="python3 benchmarks/bench_gpu_end_to_end.py --device cuda --n 8 --image-side 448 --max-new-tokens 64 \
--naive-limit 2 --require-kernels --json '$out_dir/end_to_end.json'"

if [[ $dry == 1 ]]; then
  for s in build extension cuda-tests canary memcheck racecheck kernels cascade end-to-end; do
    case $s in
      build) c=$build_cmd ;; extension) c=$extension_cmd ;; cuda-tests) c=$cuda_tests_cmd ;;
      canary) c=$canary_cmd ;; memcheck) c=$memcheck_cmd ;; racecheck) c=$racecheck_cmd ;; kernels) c=$kernels_cmd ;;
      cascade) c=$cascade_cmd ;; end-to-end) c=$e2e_cmd ;;
    esac
    say ""
    say "## $s (limit ${LIMITS[$s]}s)"
    say "\$ $c"
    say "-> dry run: not run"
  done
else
  if [[ $simulate == cpu-build ]]; then
    say ""
    say "## build (limit ${LIMITS[build]}s)"
    say "-> SIMULATED: not built; the extension already in c4u_engine/ is what the next steps meet"
    STATUS[build]=simulated
    ORDER+=(build)
  else
    run_step build device "${LIMITS[build]}" "$build_cmd"
  fi
  run_step extension build "${LIMITS[extension]}" "$extension_cmd"
  run_step cuda-tests extension "${LIMITS[cuda-tests]}" "$cuda_tests_cmd"
  run_step canary extension "${LIMITS[canary]}" "$canary_cmd"
  run_step memcheck canary "${LIMITS[memcheck]}" "$memcheck_cmd"
  run_step racecheck canary "${LIMITS[racecheck]}" "$racecheck_cmd"
  run_step kernels extension "${LIMITS[kernels]}" "$kernels_cmd"
  run_step cascade extension "${LIMITS[cascade]}" "$cascade_cmd"
  run_step end-to-end extension "${LIMITS[end-to-end]}" "$e2e_cmd"
fi

say ""
failed=() not_run=()
for s in "${ORDER[@]}"; do
  [[ ${STATUS[$s]} == failed ]] && failed+=("$s")
  [[ ${STATUS[$s]} == "not run" ]] && not_run+=("$s")
done
if [[ -n $first_failure ]]; then
  say "RESULT: FAILED at $first_failure; failed: ${failed[*]}${not_run[*]:+; not run: ${not_run[*]}}"
  exit 1
fi
if [[ -n $simulate ]]; then
  say "RESULT: SIMULATED run, nothing failed (a simulation never passes)"
  exit 1
fi
say "RESULT: PASSED$([[ $dry == 1 ]] && echo ' (dry run: CPU-side steps only)')"
exit 0
