#!/usr/bin/env bash
# Runs csrc/core/*.cu on the CPU under the host stand-in of cuda_runtime.h and checks every kernel
# against double-precision loops over the host noise (kernels_test.cc), for two multiprocessor
# counts (different grids and contraction splits). Needs g++ with C++20 and python3; about a
# minute on 2 cores. Usage: tests/cuda_emulation/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Headers with kernels and launches too: the translated sources include their neighbours from $work
# first (the directory of the including file).
for cuh in "$root"/csrc/core/*.cuh; do
  python3 "$here/translate_launches.py" "$cuh" >"$work/$(basename "$cuh")"
done
sources=()
for cu in "$root"/csrc/core/*.cu; do
  translated="$work/$(basename "$cu" .cu).cc"
  python3 "$here/translate_launches.py" "$cu" >"$translated"
  sources+=("$translated")
done
# The CPU's AVX2 noise, with the flags of csrc/core/gaussian_avx2.cc (see kernels_test.cc's
# expect_same_noise; it runs only where the CPU has AVX2 and FMA). Linked last, so that the linker
# keeps the other files' copies of inline functions they share (as CMakeLists.txt orders the ISA
# files).
g++ -std=c++20 -O3 -mavx2 -mfma -ffp-contract=off -I"$root/csrc" -c "$here/cpu_noise_avx2.cc" -o "$work/cpu_noise_avx2.o"
# -iquote: the translated sources include the other headers ("noise.h") from csrc/core.
g++ -std=c++20 -O1 -pthread -w -I"$here" -iquote "$root/csrc/core" -I"$root/csrc" \
  "$here/kernels_test.cc" "${sources[@]}" "$work/cpu_noise_avx2.o" -o "$work/kernels_test"
for sms in 3 132; do
  echo "cuda_emulation: $sms multiprocessors"
  CUDA_EMULATION_SMS=$sms "$work/kernels_test"
done
