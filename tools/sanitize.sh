#!/usr/bin/env bash
# Builds the core kernels, the TensorFlow op library and fusedbnn._core with AddressSanitizer and
# UndefinedBehaviorSanitizer in a separate build directory, stages them with the Python sources in
# a private package tree (the normal build's libraries in python/fusedbnn/ are left alone), and runs
# the kernel and op tests against them. Any sanitizer report stops the run with a nonzero status.
#
# Usage: tools/sanitize.sh [extra pytest args]
#   PYTHON      interpreter with TensorFlow and pytest (default: python)
#   BUILD_DIR   sanitizer build directory (default: build-sanitize)
#   JOBS        parallel compile jobs (default: 2)
#   SANITIZE_TESTS  test files to run (default: the kernel and op tests below)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=$(command -v "${PYTHON:-python}")
build=${BUILD_DIR:-build-sanitize}
stage="$build/stage"

# SKBUILD_PROJECT_NAME selects CMake's install rules instead of the development build's copy of the
# libraries into python/fusedbnn/, which would replace the normal build's.
cmake -S . -B "$build" -G Ninja -DPython_EXECUTABLE="$python" -DFUSEDBNN_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSKBUILD_PROJECT_NAME=fusedbnn >/dev/null
ninja -C "$build" -j"${JOBS:-2}"
rm -rf "$stage"
mkdir -p "$stage"
cp -r python/fusedbnn "$stage/"
find "$stage/fusedbnn" \( -name '*.so' -o -name '_build_info.py' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cmake --install "$build" --prefix "$stage" >/dev/null

# Python and TensorFlow are not instrumented: the ASan runtime must be loaded first.
asan_runtime=$("${CXX:-c++}" -print-file-name=libasan.so)
ubsan_runtime=$("${CXX:-c++}" -print-file-name=libubsan.so)
export LD_PRELOAD="$asan_runtime $ubsan_runtime"
# Leak checking is off: the interpreter and TensorFlow keep allocations alive at exit by design.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:symbolize=1:suppressions=$root/tools/asan.supp"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$root/tools/ubsan.supp"
export TF_CPP_MIN_LOG_LEVEL=2
export PYTHONPATH="$root/$stage"

# The kernel and op tests (the layers' tests add nothing the op tests do not reach). The one
# deselected test measures TensorFlow's allocation peaks, which the ASan runtime changes.
tests=${SANITIZE_TESTS:-"tests/test_core.py tests/test_noise.py tests/test_gaussian_ops.py tests/test_linear.py
  tests/test_conv.py tests/test_embedding.py tests/test_lstm.py tests/test_properties.py tests/test_numerics.py"}
# --capture=sys: a sanitizer writes its report to file descriptor 2, which must not be captured.
# The staged package, not python/, must be the one imported: check before running the tests.
"$python" -c "import fusedbnn, sys; sys.exit(0 if fusedbnn.__file__.startswith('$root/$stage') else 'not the sanitizer build: ' + fusedbnn.__file__)"
# shellcheck disable=SC2086
"$python" -m pytest -q -p no:cacheprovider --capture=sys $tests \
  --deselect tests/test_linear.py::test_no_eps_sized_tensor_beyond_the_weight_in_a_training_step "$@"
