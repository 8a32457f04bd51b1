// The elementwise Gaussian kernels, written once over a lane traits type T (simd.h) and compiled
// once per instruction set by gaussian_{scalar,avx2,avx512}.cc.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>

#include "gaussian.h"
#include "simd.h"

namespace fusedbnn {
namespace simd {

// Maths of a lane type: the polynomials for vector types, libm for ScalarExact.
template <class T>
struct Ops : T, PolyMath<T> {
  using PolyMath<T>::log;
};
template <>
struct Ops<ScalarExact> : ScalarExact {};

// Standard normals in blocks of 4 * kLanes consecutive flat elements.
template <class T>
struct NormalGen {
  static constexpr int kBlock = 4 * T::kLanes;
  using F = typename T::F;
  using I = typename T::I;

  static F unit_float(I x) {
    const I bits = T::or_i(T::and_i(x, T::set1_i(0x7fffff)), T::set1_i(127 << 23));
    return T::sub(T::as_float(bits), T::set1(1.0f));
  }

  static void box_muller(I x0, I x1, F* f0, F* f1) {
    using M = PolyMath<T>;
    const F u1 = T::max(unit_float(x0), T::set1(1.0e-7f));
    const F u = unit_float(x1);
    // float(double(2 pi) * u), as TensorFlow computes it: the product split into float parts.
    const F two_pi_hi = T::set1(6.28318548202514648f), two_pi_lo = T::set1(-1.7484556000744883e-07f);
    const F p = T::mul(two_pi_hi, u);
    const F v1 = T::add(p, T::add(T::fma(two_pi_hi, u, T::sub(T::set1(0.0f), p)), T::mul(two_pi_lo, u)));
    const F radius = T::sqrt(T::mul(T::set1(-2.0f), M::log(u1)));
    F s, c;
    M::sincos(v1, &s, &c);
    *f0 = T::mul(s, radius);
    *f1 = T::mul(c, radius);
  }

  static void fill(const NoiseStream& st, uint64_t block, float* out) {
    const uint64_t g0 = block * T::kLanes;
    const Philox4 base = counter_add(st.counter, g0);
    if (base.v[0] > 0xFFFFFFFFu - (T::kLanes - 1)) {
      // The lanes' counters would carry into the next word: take the exact scalar path.
      for (int l = 0; l < T::kLanes; ++l) normal_group(st, g0 + l, out + 4 * l);
      return;
    }
    I c0 = T::add_i(T::set1_i(static_cast<int>(base.v[0])), T::lane_index());
    I c1 = T::set1_i(static_cast<int>(base.v[1]));
    I c2 = T::set1_i(static_cast<int>(base.v[2]));
    I c3 = T::set1_i(static_cast<int>(base.v[3]));
    uint32_t k0 = st.key[0], k1 = st.key[1];
    for (int round = 0; round < 10; ++round) {
      I hi0, lo0, hi1, lo1;
      T::mul_hi_lo(c0, kPhiloxM4x32A, &hi0, &lo0);
      T::mul_hi_lo(c2, kPhiloxM4x32B, &hi1, &lo1);
      c0 = T::xor_i(T::xor_i(hi1, c1), T::set1_i(static_cast<int>(k0)));
      c1 = lo1;
      c2 = T::xor_i(T::xor_i(hi0, c3), T::set1_i(static_cast<int>(k1)));
      c3 = lo0;
      k0 += kPhiloxW32A;
      k1 += kPhiloxW32B;
    }
    F n[4];
    box_muller(c0, c1, &n[0], &n[1]);
    box_muller(c2, c3, &n[2], &n[3]);
    T::interleave4(n, out);
  }
};

template <>
struct NormalGen<ScalarExact> {
  static constexpr int kBlock = 4;
  static void fill(const NoiseStream& st, uint64_t block, float* out) { normal_group(st, block, out); }
};

// Runs body(eps, in..., out...) on lane vectors over [begin, end). Blocks cut by the range ends are
// computed padded in local buffers, so every element gets the same arithmetic wherever a range
// starts: results never depend on how work was split.
template <class T, size_t NIn, size_t NOut, class Body>
void map_range(const NoiseStream& st, int64_t begin, int64_t end, const std::array<const float*, NIn>& in,
               const std::array<float*, NOut>& out, Body body) {
  using F = typename T::F;
  constexpr int B = NormalGen<T>::kBlock, L = T::kLanes;
  alignas(64) float eps[B];
  alignas(64) float local_in[NIn + 1][B];
  alignas(64) float local_out[NOut][B];
  auto run = [&](const std::array<const float*, NIn>& src, const std::array<float*, NOut>& dst) {
    for (int k = 0; k < B; k += L) {
      F x[NIn + 1], y[NOut];
      for (size_t j = 0; j < NIn; ++j) x[j] = T::load(src[j] + k);
      body(T::load(eps + k), x, y);
      for (size_t j = 0; j < NOut; ++j) T::store(dst[j] + k, y[j]);
    }
  };
  for (int64_t block = begin / B; block * B < end; ++block) {
    NormalGen<T>::fill(st, static_cast<uint64_t>(block), eps);
    const int64_t lo = std::max(begin, block * B), hi = std::min(end, (block + 1) * B);
    const int64_t offset = lo - begin;
    const int first = static_cast<int>(lo - block * B), count = static_cast<int>(hi - lo);
    std::array<const float*, NIn> src;
    std::array<float*, NOut> dst;
    if (count == B) {
      for (size_t j = 0; j < NIn; ++j) src[j] = in[j] + offset;
      for (size_t j = 0; j < NOut; ++j) dst[j] = out[j] + offset;
      run(src, dst);
      continue;
    }
    for (size_t j = 0; j < NIn; ++j) {
      std::fill(local_in[j], local_in[j] + B, 0.0f);
      std::memcpy(local_in[j] + first, in[j] + offset, count * sizeof(float));
      src[j] = local_in[j];
    }
    for (size_t j = 0; j < NOut; ++j) dst[j] = local_out[j];
    run(src, dst);
    for (size_t j = 0; j < NOut; ++j) std::memcpy(out[j] + offset, local_out[j] + first, count * sizeof(float));
  }
}

template <class T>
struct GaussianImpl {
  using M = Ops<T>;
  using F = typename T::F;

  static void fill_normal(const NoiseStream& st, int64_t begin, int64_t end, float* eps) {
    map_range<T, 0, 1>(st, begin, end, {}, {eps}, [](F e, const F*, F* y) { y[0] = e; });
  }

  static void sample(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho, float* w) {
    map_range<T, 2, 1>(st, begin, end, {mu, rho}, {w},
                       [](F e, const F* x, F* y) { y[0] = M::fma(M::softplus(x[1]), e, x[0]); });
  }

  static void sample_grad(const NoiseStream& st, int64_t begin, int64_t end, const float* dw, const float* mu,
                          const float* rho, float* drho, float* w) {
    if (w == nullptr) {
      map_range<T, 2, 1>(st, begin, end, {dw, rho}, {drho},
                         [](F e, const F* x, F* y) { y[0] = M::mul(M::mul(x[0], e), M::sigmoid(x[1])); });
      return;
    }
    map_range<T, 3, 2>(st, begin, end, {dw, mu, rho}, {drho, w}, [](F e, const F* x, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(x[2], &sigma, &dsigma);
      y[0] = M::mul(M::mul(x[0], e), dsigma);
      y[1] = M::fma(sigma, e, x[1]);
    });
  }

  static double kl_sum(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho,
                       float mu_prior, float std_prior) {
    constexpr int64_t kPiece = 4096;
    alignas(64) float terms[kPiece];
    const F mp = M::set1(mu_prior), inv_sp = M::set1(1.0f / std_prior);
    const F log_sp = M::set1(logf(std_prior)), half = M::set1(0.5f);
    double total = 0.0;
    for (int64_t lo = begin; lo < end; lo += kPiece) {
      const int64_t hi = std::min(end, lo + kPiece);
      map_range<T, 2, 1>(st, lo, hi, {mu + (lo - begin), rho + (lo - begin)}, {terms}, [&](F e, const F* x, F* y) {
        const F sigma = M::softplus(x[1]);
        const F z = M::mul(M::sub(M::fma(sigma, e, x[0]), mp), inv_sp);
        // log N(w; mu, sigma) - log N(w; mu_prior, std_prior), the 2 pi terms cancelling.
        y[0] = M::add(M::sub(log_sp, M::log(sigma)), M::mul(half, M::sub(M::mul(z, z), M::mul(e, e))));
      });
      total += sum(terms, hi - lo);
    }
    return total;
  }

  static void kl_grad(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho,
                      float mu_prior, float std_prior, float scale, float* dmu, float* drho) {
    const F mp = M::set1(mu_prior), g = M::set1(scale / (std_prior * std_prior)), sc = M::set1(scale);
    map_range<T, 2, 2>(st, begin, end, {mu, rho}, {dmu, drho}, [&](F e, const F* x, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(x[1], &sigma, &dsigma);
      const F pull = M::mul(M::sub(M::fma(sigma, e, x[0]), mp), g);  // scale * (w - mu_prior) / std_prior^2
      y[0] = pull;
      y[1] = M::mul(M::sub(M::mul(pull, e), M::div(sc, sigma)), dsigma);
    });
  }

  static double sum(const float* v, int64_t n) {
    F acc = M::set1(0.0f);
    int64_t i = 0;
    for (; i + T::kLanes <= n; i += T::kLanes) acc = M::add(acc, M::load(v + i));
    double total = M::reduce_add(acc);
    for (; i < n; ++i) total += v[i];
    return total;
  }

  static GaussianKernels table(const char* isa) {
    return GaussianKernels{isa, &fill_normal, &sample, &sample_grad, &kl_sum, &kl_grad};
  }
};

}  // namespace simd
}  // namespace fusedbnn
