#!/usr/bin/env bash
# CI: compile and link the CUDA build on a machine without a GPU, so that a change that breaks it
# cannot land. Two configurations, both for the architectures in FUSEDBNN_CUDA_ARCHS (CMake's
# CUDA_ARCHITECTURES syntax; default 90: one architecture keeps CI fast, while a release build
# takes cmake/cuda.cmake's list of five):
#   build-ci-cuda/     TensorFlow op library with its GPU kernel registrations + _core with CUDA;
#   build-ci-cuda-notf/  _core with CUDA and without TensorFlow (what tests/gpu/run_on_gpu.sh builds).
# Then it checks that the op library loads in TensorFlow with DEVICE_GPU kernels registered for
# every op that has CUDA kernels, their seeds in host memory (a GPU op never waits for a copy of
# its seed to the host), that _core exposes its CUDA submodule, and runs the kernels
# themselves on the CPU under tests/cuda_emulation (indexing, tiles, splits, barriers; no GPU).
# Idempotent (incremental rebuilds); fails on any compiler warning in the CUDA sources.
# Needs nvcc (CUDA 12.x or 13.x; on PATH, in CUDACXX, or /usr/local/cuda), TensorFlow in $PYTHON;
# installs CMake, Ninja and pybind11 from PyPI when they are missing.
# Usage (from .ci/run, with the venv that has TensorFlow active): bash tools/ci_cuda_build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$(command -v "${PYTHON:-python3}")  # an absolute path, for CMake
export TF_CPP_MIN_LOG_LEVEL=3

nvcc=${CUDACXX:-$(command -v nvcc || true)}
if [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [[ -z $nvcc ]]; then
  echo "ci_cuda_build: no nvcc found (PATH, CUDACXX, /usr/local/cuda): cannot compile the CUDA build" >&2
  exit 1
fi
echo "ci_cuda_build: $("$nvcc" --version | tail -1)"

missing=()
"$PYTHON" -c "import pybind11" 2>/dev/null || missing+=(pybind11)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja)
if ((${#missing[@]})); then
  "$PYTHON" -m pip install -q "${missing[@]}"
  PATH="$(dirname "$PYTHON"):$PATH"
fi

configure_and_build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DPython_EXECUTABLE="$PYTHON" -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DFUSEDBNN_CUDA=ON -DFUSEDBNN_CUDA_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES="${FUSEDBNN_CUDA_ARCHS:-90}" \
    -DFUSEDBNN_COPY_TO_SOURCE=OFF "$@" >"$dir/configure.log" 2>&1 ||
    { cat "$dir/configure.log" >&2; exit 1; }
  cmake --build "$dir" -j "${CI_BUILD_JOBS:-2}"
}

mkdir -p build-ci-cuda build-ci-cuda-notf
configure_and_build build-ci-cuda -DFUSEDBNN_TF=ON
configure_and_build build-ci-cuda-notf -DFUSEDBNN_TF=OFF

"$PYTHON" - build-ci-cuda build-ci-cuda-notf <<'PY'
import glob
import importlib.machinery
import importlib.util
import sys

import tensorflow as tf
from tensorflow.python.framework import kernels, op_def_registry

with_tf, without_tf = sys.argv[1:]
library = tf.load_op_library(f"{with_tf}/_fusedbnn_ops.so")
# Every op the library registers: its Python wrappers are named FusedBnn_<op>.
ops = [f"FusedBnn>{name[len('FusedBnn_'):]}" for name in dir(library) if name.startswith("FusedBnn_")]
# Ops without CUDA kernels, which TensorFlow places on the CPU: NextSeed, which advances a noise
# stream's state in host memory (where the ops read seeds), on purpose. An op listed here that gains
# a GPU kernel fails the check too, so that the list cannot go stale.
CPU_ONLY = {"FusedBnn>NextSeed"}
for op in ops:
    registered = kernels.get_registered_kernels_for_op(op).kernel
    devices = {k.device_type for k in registered}
    expected = {"CPU"} if op in CPU_ONLY else {"CPU", "GPU"}
    if devices != expected:
        sys.exit(f"ci_cuda_build: {op} has kernels for {sorted(devices)}, expected {sorted(expected)}")
    seeds = {arg.name for arg in op_def_registry.get(op).input_arg if arg.name.endswith("seed")}
    for k in registered:
        if k.device_type == "GPU":
            device_seeds = seeds - set(k.host_memory_arg)
            if device_seeds:
                sys.exit(f"ci_cuda_build: {op}'s GPU kernel takes {sorted(device_seeds)} in device memory")
for build in (with_tf, without_tf):
    path = glob.glob(f"{build}/_core*.so")[0]
    loader = importlib.machinery.ExtensionFileLoader("_core", path)
    core = importlib.util.module_from_spec(importlib.util.spec_from_file_location("_core", path, loader=loader))
    loader.exec_module(core)
    entry_points = ("linear_forward", "flipout_linear_forward", "local_reparam_linear_forward", "lstm_forward")
    if not (core.has_cuda and all(hasattr(core.cuda, f) for f in entry_points)):
        sys.exit(f"ci_cuda_build: {path} lacks the CUDA entry points")
print(f"ci_cuda_build: OK: GPU kernels registered for {len(ops) - len(CPU_ONLY)} ops; _core.cuda in both builds")
if CPU_ONLY:
    print(f"ci_cuda_build: CPU-only (host-memory state): {sorted(CPU_ONLY)}")
PY

bash tests/cuda_emulation/run.sh
