// Philox4x32-10 + Box-Muller: the noise contract (docs/design.md).
//
// eps(stream, i) is element i (flat, row-major) of tf.random.stateless_normal(shape, seed) for any
// shape, computed by random access. These scalar functions are bit-exact with TensorFlow's CPU
// kernels (philox_random.h, random_distributions_utils.h) when compiled for the host; CUDA's logf
// and sincosf differ from glibc's by 1 and 2 ulp. The vectorised CPU kernels (simd.h) reuse the
// Philox rounds below and approximate log/sincos within 2e-6 absolute.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FUSEDBNN_HD static __host__ __device__ __forceinline__
#else
// static: each instruction-set translation unit keeps its own copy (no cross-ISA ODR merging).
#define FUSEDBNN_HD static inline
#endif

namespace fusedbnn {

constexpr uint32_t kPhiloxW32A = 0x9E3779B9u;
constexpr uint32_t kPhiloxW32B = 0xBB67AE85u;
constexpr uint32_t kPhiloxM4x32A = 0xD2511F53u;
constexpr uint32_t kPhiloxM4x32B = 0xCD9E8D57u;

// Key and 128-bit counter of one stateless stream, as StatelessRandomGetKeyCounter returns them.
struct NoiseStream {
  uint32_t key[2];
  uint32_t counter[4];
};

struct Philox4 {
  uint32_t v[4];
};

FUSEDBNN_HD void mul_hi_lo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *lo = static_cast<uint32_t>(product);
  *hi = static_cast<uint32_t>(product >> 32);
}

FUSEDBNN_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(kPhiloxM4x32A, ctr.v[0], &hi0, &lo0);
    mul_hi_lo(kPhiloxM4x32B, ctr.v[2], &hi1, &lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kPhiloxW32A;
    k1 += kPhiloxW32B;
  }
  return ctr;
}

// counter + g as one 128-bit little-endian integer (PhiloxRandom::Skip).
FUSEDBNN_HD Philox4 counter_add(const uint32_t counter[4], uint64_t g) {
  const uint64_t lo = (static_cast<uint64_t>(counter[1]) << 32 | counter[0]) + g;
  const uint64_t carry = lo < g ? 1 : 0;
  const uint64_t hi = (static_cast<uint64_t>(counter[3]) << 32 | counter[2]) + carry;
  return Philox4{{static_cast<uint32_t>(lo), static_cast<uint32_t>(lo >> 32), static_cast<uint32_t>(hi),
                  static_cast<uint32_t>(hi >> 32)}};
}

// The scrambling of GenerateKey in stateless_random_ops.cc: seed (s0, s1), each sign-extended
// to 64 bits as TensorFlow does for int32 seeds, becomes a key and a counter.
static inline NoiseStream stream_from_seed(int64_t s0, int64_t s1) {
  const uint64_t u0 = static_cast<uint64_t>(s0), u1 = static_cast<uint64_t>(s1);
  const Philox4 mix = philox4x32_10(Philox4{{static_cast<uint32_t>(u0), static_cast<uint32_t>(u0 >> 32),
                                             static_cast<uint32_t>(u1), static_cast<uint32_t>(u1 >> 32)}},
                                    0x3ec8f720u, 0x02461e29u);
  return NoiseStream{{mix.v[0], mix.v[1]}, {0u, 0u, mix.v[2], mix.v[3]}};
}

FUSEDBNN_HD float uint32_to_unit_float(uint32_t x) {
  const uint32_t bits = (127u << 23) | (x & 0x7fffffu);
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f - 1.0f;
}

FUSEDBNN_HD void box_muller(uint32_t x0, uint32_t x1, float* f0, float* f1) {
  const float epsilon = 1.0e-7f;
  float u1 = uint32_to_unit_float(x0);
  if (u1 < epsilon) u1 = epsilon;
  const float v1 = static_cast<float>(2.0 * 3.14159265358979323846 * uint32_to_unit_float(x1));
  const float u2 = sqrtf(-2.0f * logf(u1));
  sincosf(v1, f0, f1);
  *f0 *= u2;
  *f1 *= u2;
}

// The four normals of Philox group g.
FUSEDBNN_HD void normal_group(const NoiseStream& s, uint64_t g, float out[4]) {
  const Philox4 r = philox4x32_10(counter_add(s.counter, g), s.key[0], s.key[1]);
  box_muller(r.v[0], r.v[1], &out[0], &out[1]);
  box_muller(r.v[2], r.v[3], &out[2], &out[3]);
}

// Element i of the stream's standard-normal sequence.
FUSEDBNN_HD float eps_at(const NoiseStream& s, uint64_t i) {
  float group[4];
  normal_group(s, i / 4, group);
  return group[i % 4];
}

// softplus(x) = log(1 + exp(x)), without overflow for large x nor underflow to 0 for x << 0.
FUSEDBNN_HD float stable_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// log(1 + e) for e in [0, 1], the only range softplus needs: e * P(e), P a degree-8 Chebyshev fit of
// log1p(e) / e (relative error 2e-7 in float, as logf), about half the cost of log1p with the
// rounding correction that tiny e needs. Ops supplies set1, fma and mul: the vectorised CPU kernels
// (simd.h, over lanes) and the CUDA kernels (cuda_common.cuh, over floats) share this polynomial.
template <class Ops, class F>
FUSEDBNN_HD F log1p_unit(F e) {
  F y = Ops::set1(5.25345793e-3f);
  y = Ops::fma(y, e, Ops::set1(-2.95885075e-2f));
  y = Ops::fma(y, e, Ops::set1(7.83616677e-2f));
  y = Ops::fma(y, e, Ops::set1(-1.36747703e-1f));
  y = Ops::fma(y, e, Ops::set1(1.91114306e-1f));
  y = Ops::fma(y, e, Ops::set1(-2.48443693e-1f));
  y = Ops::fma(y, e, Ops::set1(3.33192706e-1f));
  y = Ops::fma(y, e, Ops::set1(-4.99995023e-1f));
  y = Ops::fma(y, e, Ops::set1(1.0f));
  return Ops::mul(y, e);
}

FUSEDBNN_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace fusedbnn
