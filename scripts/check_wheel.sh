#!/usr/bin/env bash
# The wheel check that CI runs: build the manylinux wheel (scripts/build_wheel.sh, in the active
# environment), install it into a fresh virtual environment that has no build tools, and run
# scripts/smoke_test.py there from outside the source tree, so that nothing comes from python/.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

scripts/build_wheel.sh "$work/dist"

python -m venv "$work/venv"
cp scripts/smoke_test.py "$work/"
# Only the new environment's bin/ on PATH: no CMake, Ninja or compiler can be reached, and pip
# takes wheels only (the fusedbnn wheel, TensorFlow and the rest from the package index).
(
  export PATH="$work/venv/bin"
  for tool in cmake ninja cc c++ gcc g++ clang; do
    if command -v "$tool" >/dev/null; then
      echo "check_wheel: $tool is reachable in the install environment" >&2
      exit 1
    fi
  done
  cd "$work"
  python -m pip install --only-binary :all: "$work"/dist/fusedbnn-*.whl
  python smoke_test.py
  # and as on a CPU without AVX-512, where TensorFlow runs without oneDNN
  FUSEDBNN_ISA=avx2 TF_ENABLE_ONEDNN_OPTS=0 python smoke_test.py
)
