// The elementwise kernels of local reparameterization, written once over a lane traits type T
// (simd.h) and compiled once per instruction set by estimators_{scalar,avx2,avx512}.cc.
#pragma once

#include <algorithm>

#include "estimators.h"
#include "gaussian_impl.h"

namespace fusedbnn {
namespace simd {

template <class T>
struct VarianceImpl {
  using M = Ops<T>;
  using F = typename T::F;

  // fn(rho, dvar, variance, drho) over [0, n) in whole vectors; a tail is computed in a padded buffer,
  // so every element gets the same arithmetic wherever a range ends.
  template <int kIn, int kOut, class Fn>
  static void map(int64_t n, const float* const (&in)[kIn], float* const (&out)[kOut], Fn fn) {
    constexpr int kLanes = T::kLanes;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      F x[kIn], y[kOut];
      for (int a = 0; a < kIn; ++a) x[a] = T::load(in[a] + i);
      fn(x, y);
      for (int b = 0; b < kOut; ++b) T::store(out[b] + i, y[b]);
    }
    if (i >= n) return;  // ">=", not "==": GCC 13 warned (-Warray-bounds) of a one-lane tail it did not rule out
    float pad_in[kIn][kLanes] = {}, pad_out[kOut][kLanes];
    for (int a = 0; a < kIn; ++a) std::copy(in[a] + i, in[a] + n, pad_in[a]);
    F x[kIn], y[kOut];
    for (int a = 0; a < kIn; ++a) x[a] = T::load(pad_in[a]);
    fn(x, y);
    for (int b = 0; b < kOut; ++b) {
      T::store(pad_out[b], y[b]);
      std::copy(pad_out[b], pad_out[b] + (n - i), out[b] + i);
    }
  }

  static void variance(int64_t n, const float* rho, float* variance) {
    map<1, 1>(n, {rho}, {variance}, [](const F* x, F* y) {
      const F sigma = M::softplus(x[0]);
      y[0] = M::mul(sigma, sigma);
    });
  }

  static void variance_grad(int64_t n, const float* rho, const float* dvariance, float* variance, float* drho) {
    map<2, 2>(n, {rho, dvariance}, {variance, drho}, [](const F* x, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(x[0], &sigma, &dsigma);
      y[0] = M::mul(sigma, sigma);
      y[1] = M::mul(M::mul(x[1], M::add(sigma, sigma)), dsigma);
    });
  }

  static VarianceKernels table() { return VarianceKernels{&variance, &variance_grad}; }
};

}  // namespace simd
}  // namespace fusedbnn
