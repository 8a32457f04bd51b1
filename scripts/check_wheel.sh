#!/usr/bin/env bash
# The wheel check that CI runs: build the manylinux wheel (scripts/build_wheel.sh, in the active
# environment), install it into a fresh virtual environment that has no build tools, and run
# scripts/smoke_test.py there from outside the source tree, so that nothing comes from python/.
# Where Debian's qemu-user is installed (.ci/run installs it), the smoke test runs a third time on
# its emulated CPU with AVX2 and FMA and no AVX-512 (`-cpu max,-avx512f`; QEMU 7.2 has no AVX-512 at
# all): an AVX-512 instruction outside the AVX-512 kernels (say an inline function that the linker
# took from an AVX-512 file) stops the process there, which FUSEDBNN_ISA=avx2 on an AVX-512 machine
# cannot show.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

scripts/build_wheel.sh "$work/dist"

python -m venv "$work/venv"
qemu=$(command -v qemu-x86_64 || true)
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
  # and on an emulated CPU that has AVX2 and no AVX-512 (about half a minute): the kernels must
  # choose AVX2 by themselves
  if [[ -n $qemu ]]; then
    FUSEDBNN_EXPECT_ISA=avx2 "$qemu" -cpu max,-avx512f "$work/venv/bin/python" smoke_test.py
  else
    echo "check_wheel: qemu-x86_64 not found: the smoke test on an emulated AVX2-only CPU is skipped"
  fi
)
