#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with an NVIDIA GPU, nvcc, CMake, pybind11, PyTorch and
# no TensorFlow (about 3-5 minutes on an H100):
#   1. build fusedbnn._core with the CUDA kernels for sm_90, without TensorFlow;
#   2. run tests/gpu (each kernel against PyTorch float32 maths from the host noise);
#   3. run them again under compute-sanitizer --tool memcheck;
#   4. run the GPU benchmark, whose table comes last.
# Usage: tests/gpu/run_on_gpu.sh [--dry-run]   (--dry-run: steps 1 and 2, where the tests skip
# without a GPU, then print the commands of steps 3 and 4; no GPU needed). PYTHON, BUILD_DIR and CUDA_ARCH override defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCH=${CUDA_ARCH:-90}
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; fi

step() { printf '\n=== %s\n' "$*"; }
run() {
  echo "+ $*"
  if [[ $DRY_RUN == 0 ]]; then "$@"; fi
}

step "build _core with CUDA (sm_${CUDA_ARCH}, no TensorFlow)"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
mkdir -p "$BUILD_DIR"
build_log="$BUILD_DIR/build.log"
{
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
    -DFUSEDBNN_TF=OFF -DFUSEDBNN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DFUSEDBNN_COPY_TO_SOURCE=OFF &&
    cmake --build "$BUILD_DIR" --parallel "$(nproc)"
} >"$build_log" 2>&1 || { cat "$build_log"; echo "build failed (log: $build_log)" >&2; exit 1; }
FUSEDBNN_CORE=$(ls "$BUILD_DIR"/_core*.so)
export FUSEDBNN_CORE
echo "built $FUSEDBNN_CORE"

# --confcutdir keeps tests/conftest.py (which imports TensorFlow) out.
pytest_gpu=("$PYTHON" -m pytest -q -p no:cacheprovider --confcutdir=tests/gpu tests/gpu)

step "tests/gpu"
if [[ $DRY_RUN == 1 ]]; then
  # Runs for real: without a GPU (or PyTorch) every test skips, and pytest exits 5 (none ran).
  "${pytest_gpu[@]}" -rs || [[ $? == 5 ]]
else
  "${pytest_gpu[@]}" -rs
fi

step "tests/gpu under compute-sanitizer memcheck"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# Without PyTorch's caching allocator every tensor is its own allocation, so memcheck sees an
# access past any of them.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
run "$sanitizer" --tool memcheck --error-exitcode 1 --print-limit 20 "${pytest_gpu[@]}" -x

step "GPU benchmark"
unset PYTORCH_NO_CUDA_MEMORY_CACHING
run "$PYTHON" tests/gpu/bench.py --reps "${BENCH_REPS:-30}" --json "${BENCH_JSON:-$BUILD_DIR/gpu_bench.json}"
