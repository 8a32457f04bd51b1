#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with an NVIDIA GPU, nvcc, CMake, pybind11, PyTorch and
# no TensorFlow; under 7 minutes on an H100, and it always ends with its summary table:
#   1. build fusedbnn._core with the CUDA kernels, without TensorFlow;
#   2. tests/gpu (each kernel against PyTorch float32 maths from the host noise), each test under
#      pytest-timeout, a JUnit report;
#   3. the GPU benchmark (tests/gpu/bench.py), its JSON;
#   4. the kernels and copies of every benchmark side (tests/gpu/profile_kernels.py, kernels.txt);
#   5. the noise in cycles a normal on this machine's CPU (tests/gpu/cpu_noise.sh): another CPU
#      class than the development VM's, for the AVX2 target of issue 14;
#   6. compute-sanitizer memcheck, racecheck, synccheck and initcheck on tests/gpu/sanitize_subset.py
#      (every kernel once at small sizes), restricted to fusedbnn's kernels (initcheck instruments
#      all, so that it sees PyTorch's writes of the inputs); each one skipped, with the reason, when
#      compute-sanitizer is missing or refuses the device.
#   7. with FUSEDBNN_GPU_BASELINE, the benchmark again with an earlier commit's kernels, built from
#      that source tree: what the changes since then did, on this card in this run.
# Every step runs under `timeout`, within one budget for the whole run: a step that would start
# with too little of it left is skipped, so the table is always reached. A failed step does not
# stop the later ones (a failed build skips them). Exit status: 1 if a step failed or timed out.
#
# Usage: tests/gpu/run_on_gpu.sh [--dry-run]
#   --dry-run: no build, no GPU: compiles tests/gpu's Python, goes through every step, checks for
#   compute-sanitizer, prints the commands with their time limits and the table (what CI runs to
#   keep this script working).
# Environment:
#   FUSEDBNN_GPU_OUT     logs, the test report, the benchmark JSON and the table (default build-gpu)
#   FUSEDBNN_GPU_BUILD   the CMake build tree (default build-gpu/cmake)
#   FUSEDBNN_CUDA_ARCHS  CMAKE_CUDA_ARCHITECTURES (default 90: the H100 / H200 this runs on)
#   FUSEDBNN_GPU_BUDGET  seconds for the whole run (default 400)
#   FUSEDBNN_GPU_BASELINE  a source tree of an earlier commit for step 7 (none: no step 7), e.g.
#                        git archive REV CMakeLists.txt cmake csrc python/fusedbnn/_build_info.py.in |
#                          (mkdir -p build-gpu-baseline && tar -x -C build-gpu-baseline)
#                        (an ignored path: the device tool's `carry` takes it to the GPU machine)
#   FUSEDBNN_GPU_BASELINE_CASES  a regular expression of the benchmark cases step 7 runs (default
#                        linear|embedding: those bound by the noise's arithmetic, the changed kernels)
#   PYTHON, BENCH_REPS   the interpreter (default python3), benchmark repetitions (default 20)
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON=$(command -v "${PYTHON:-python3}")
OUT=${FUSEDBNN_GPU_OUT:-build-gpu}
BUILD=${FUSEDBNN_GPU_BUILD:-build-gpu/cmake}
ARCHS=${FUSEDBNN_CUDA_ARCHS:-90}
BUDGET=${FUSEDBNN_GPU_BUDGET:-400}
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; fi
mkdir -p "$OUT" "$BUILD"
OUT=$(cd "$OUT" && pwd)
deadline=$((SECONDS + BUDGET))
RESERVE=5  # seconds kept for the table

steps=() results=() durations=() notes=()
record() { steps+=("$1") results+=("$2") durations+=("$3") notes+=("$4"); }

summary() {
  local failed=0 i
  for i in "${!steps[@]}"; do
    if [[ ${results[$i]} == FAIL || ${results[$i]} == TIMEOUT ]]; then failed=1; fi
  done
  {
    printf '\n%-20s %-8s %6s  %s\n' step result time note
    printf '%s\n' "------------------------------------------------------------------------------------------"
    for i in "${!steps[@]}"; do
      printf '%-20s %-8s %5ss  %s\n' "${steps[$i]}" "${results[$i]}" "${durations[$i]}" "${notes[$i]}"
    done
    printf 'total %ss of a %ss budget; logs, report and JSON in %s\n' "$SECONDS" "$BUDGET" "$OUT"
  } | tee "$OUT/summary.txt"
  return $failed
}

# run_step NAME CAP LOG COMMAND...: runs COMMAND under `timeout` (CAP seconds, or what is left of
# the budget), output to LOG; records PASS, FAIL or TIMEOUT (SKIP when no time is left) and
# returns the command's status.
run_step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local left=$((deadline - SECONDS - RESERVE))
  if ((left < 15)); then
    record "$name" SKIP 0 "no time left of the ${BUDGET}s budget"
    return 1
  fi
  local limit=$((cap < left ? cap : left))
  printf '\n=== %s (timeout %ss)\n+ %s\n' "$name" "$limit" "$*"
  if ((DRY_RUN)); then
    record "$name" DRY 0 "would run under timeout ${limit}s"
    return 0
  fi
  local start=$SECONDS status
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  status=$?
  local took=$((SECONDS - start))
  if ((status == 124 || status == 137)); then
    record "$name" TIMEOUT "$took" "killed after ${limit}s; log ${log#"$OUT"/}"
  elif ((status == 0)); then
    record "$name" PASS "$took" "$(tail -n 1 "$log" | cut -c1-70)"
  else
    record "$name" FAIL "$took" "exit $status; log ${log#"$OUT"/}"
  fi
  if ((status != 0)); then tail -n 40 "$log"; fi
  return $status
}

{
  echo "date: $(date -u +%FT%TZ)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  else
    echo "no nvidia-smi"
  fi
  nvcc --version 2>&1 | tail -n 1
  echo "cpu: $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" 2>&1 | tail -n 1
} >"$OUT/environment.txt"
cat "$OUT/environment.txt"
if ((DRY_RUN)); then  # what a dry run can check of the GPU steps: their Python compiles
  "$PYTHON" -m py_compile tests/gpu/*.py || { echo "tests/gpu does not compile" >&2; exit 1; }
fi

# 1. Build. build_script SRC BUILD PYTHON ARCHS (bash -c): _core from source tree SRC.
build_script='cmake -S "$1" -B "$2" -G Ninja -DPython_EXECUTABLE="$3" -DFUSEDBNN_TF=OFF -DFUSEDBNN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$4" -DFUSEDBNN_COPY_TO_SOURCE=OFF && cmake --build "$2" --parallel "$(nproc)"'
built_core() { ls "$1"/_core*.so 2>/dev/null | head -n 1; }  # the _core a build tree holds
built=0
if run_step build 240 "$OUT/build.log" bash -c "$build_script" build . "$BUILD" "$PYTHON" "$ARCHS"; then built=1; fi
FUSEDBNN_CORE=$(built_core "$BUILD")
export FUSEDBNN_CORE

skip_after_build() {  # NAME: skips a step that needs the build when it failed
  if ((built)); then return 1; fi
  record "$1" SKIP 0 "the build failed"
  return 0
}

# 2. GPU tests. --confcutdir keeps tests/conftest.py (which imports TensorFlow) out.
pytest_args=(-q -p no:cacheprovider --confcutdir=tests/gpu -rs --junitxml="$OUT/gpu-tests.xml")
if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then
  pytest_args+=(--timeout=60)
else
  echo "pytest-timeout is not installed: the tests run without a per-test timeout"
fi
skip_after_build gpu-tests || run_step gpu-tests 150 "$OUT/gpu-tests.log" "$PYTHON" -m pytest "${pytest_args[@]}" tests/gpu

# 3. Benchmark.
skip_after_build benchmark ||
  run_step benchmark 150 "$OUT/benchmark.log" "$PYTHON" tests/gpu/bench.py --reps "${BENCH_REPS:-20}" \
    --json "$OUT/gpu_bench.json"

# 4. Each benchmark side's kernels and copies (torch.profiler): what a side's time is made of.
skip_after_build kernel-profile ||
  run_step kernel-profile 90 "$OUT/kernel-profile.log" "$PYTHON" tests/gpu/profile_kernels.py --out "$OUT/kernels.txt"

# 5. The CPU's noise, one core (no build of the package needed; seconds).
run_step cpu-noise 45 "$OUT/cpu-noise.log" bash tests/gpu/cpu_noise.sh "$BUILD"

# 6. Sanitizers: the slowest checks go where the budget runs out first, but before step 7.
sanitizer=$(command -v compute-sanitizer || true)
if [[ -z $sanitizer && -x /usr/local/cuda/bin/compute-sanitizer ]]; then sanitizer=/usr/local/cuda/bin/compute-sanitizer; fi
gpu_present=1
if ((!DRY_RUN)) && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  gpu_present=0
fi
for tool in memcheck racecheck synccheck initcheck; do
  name="sanitizer-$tool"
  if [[ -z $sanitizer ]]; then
    record "$name" SKIP 0 "compute-sanitizer not found (PATH, /usr/local/cuda/bin)"
    continue
  fi
  if ((!gpu_present)); then
    record "$name" SKIP 0 "no CUDA device visible to PyTorch"
    continue
  fi
  skip_after_build "$name" && continue
  log="$OUT/$name.log"
  # Only fusedbnn's kernels are instrumented, except for initcheck: it tracks writes only in the
  # kernels it instruments, so with the filter every input PyTorch's kernels wrote read as
  # uninitialised (the first GPU run: thousands of such reports, each with a backtrace, past the
  # time limit).
  filter=(--kernel-name kns=fusedbnn)
  cap=75
  if [[ $tool == initcheck ]]; then filter=() cap=150; fi
  # Without PyTorch's caching allocator every tensor is its own allocation, so memcheck and
  # initcheck see accesses past any of them.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_step "$name" "$cap" "$log" "$sanitizer" --tool "$tool" "${filter[@]}" \
    --error-exitcode 1 --print-limit 20 "$PYTHON" tests/gpu/sanitize_subset.py
  status=$?
  # A sanitizer that cannot run here (an unsupported device or driver, a virtualised GPU) is a
  # skip, not a finding: it says so, never got through the subset and reported no error.
  refusal="not supported|unsupported|unable to|failed to initiali[sz]e|before first instrumented"
  if ((status != 0 && !DRY_RUN)) && [[ -f $log ]] && ! grep -q "every kernel ran" "$log" &&
    ! grep -qE "ERROR SUMMARY: [1-9]" "$log" && grep -qiE "$refusal" "$log"; then
    last=$((${#steps[@]} - 1))
    results[last]=SKIP
    notes[last]="compute-sanitizer refused: $(grep -m 1 -iE "$refusal" "$log" | cut -c1-90)"
  fi
done

# 7. The benchmark's cases again with an earlier commit's kernels (same card, same run): the
#    comparison a change needs, where the card of an earlier run may be another. Last: it informs
#    a decision, while the steps before it are the checks.
if [[ -n ${FUSEDBNN_GPU_BASELINE:-} ]]; then
  baseline_build=$BUILD-baseline
  if [[ ! -f $FUSEDBNN_GPU_BASELINE/CMakeLists.txt ]]; then
    record baseline FAIL 0 "FUSEDBNN_GPU_BASELINE=$FUSEDBNN_GPU_BASELINE holds no CMakeLists.txt"
  elif ! skip_after_build baseline-build &&
    run_step baseline-build 120 "$OUT/baseline-build.log" bash -c "$build_script" build "$FUSEDBNN_GPU_BASELINE" \
      "$baseline_build" "$PYTHON" "$ARCHS"; then
    FUSEDBNN_CORE=$(built_core "$baseline_build") run_step baseline-bench 90 "$OUT/baseline-bench.log" \
      "$PYTHON" tests/gpu/bench.py --reps "${BENCH_REPS:-20}" --cases "${FUSEDBNN_GPU_BASELINE_CASES:-linear|embedding}" \
      --json "$OUT/gpu_bench_baseline.json" --compare "$OUT/gpu_bench.json"
  fi
fi

summary
