#!/usr/bin/env bash
# The CPU noise of this machine in cycles a normal, one core (benchmarks/noise_cycles.cc): AVX2 and,
# where the CPU has it, AVX-512. run_on_gpu.sh runs it so that a lent machine's CPU, often of
# another class than the development VM's, is measured too. Last line: the CPU and the AVX2 whole
# normal. Usage: tests/gpu/cpu_noise.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 0); fi
flags=(-O3 -std=c++17 -ffp-contract=off -Icsrc/core benchmarks/noise_cycles.cc)
g++ -mavx2 -mfma "${flags[@]}" -o "$build/noise_cycles_avx2"
avx2=$("${pin[@]}" "$build/noise_cycles_avx2")
echo "$avx2"
if grep -qw avx512f /proc/cpuinfo; then
  g++ -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl -mavx512bw "${flags[@]}" -o "$build/noise_cycles_avx512"
  "${pin[@]}" "$build/noise_cycles_avx512" | grep '^avx512'
fi
cpu=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)
echo "$cpu: AVX2 whole normal $(awk '$1 == "avx2" && $2 == "whole" {print $4}' <<<"$avx2") cycles"
