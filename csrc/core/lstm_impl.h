// The LSTM activations, written once over a lane traits type T (simd.h) and compiled once per
// instruction set by lstm_{scalar,avx2,avx512}.cc.
#pragma once

#include <algorithm>

#include "lstm.h"
#include "simd.h"

namespace fusedbnn {
namespace simd {

template <class T>
struct ActivationMath : T, PolyMath<T> {};
template <>
struct ActivationMath<ScalarExact> : ScalarExact {};

template <class T>
struct ActivationImpl {
  using M = ActivationMath<T>;
  using F = typename T::F;
  static constexpr int L = T::kLanes;

  // tanh(x) = 2 sigmoid(2x) - 1: absolute error about 1e-7, as good as the sigmoid's.
  static F tanh_lanes(F x) { return M::sub(M::mul(M::set1(2.0f), M::sigmoid(M::add(x, x))), M::set1(1.0f)); }

  template <class Fn>
  static void map(const float* in, float* out, int64_t n, Fn fn) {
    int64_t i = 0;
    for (; i + L <= n; i += L) M::store(out + i, fn(M::load(in + i)));
    if (i == n) return;
    // The tail through a padded block, with the same arithmetic as full blocks.
    alignas(64) float block[L] = {};
    std::copy(in + i, in + n, block);
    M::store(block, fn(M::load(block)));
    std::copy(block, block + (n - i), out + i);
  }

  static void sigmoid(const float* in, float* out, int64_t n) {
    map(in, out, n, [](F x) { return M::sigmoid(x); });
  }
  static void tanh(const float* in, float* out, int64_t n) { map(in, out, n, tanh_lanes); }

  static ActivationKernels table() { return ActivationKernels{&sigmoid, &tanh}; }
};

}  // namespace simd
}  // namespace fusedbnn
