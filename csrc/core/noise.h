// Philox4x32-10 + Box-Muller: the noise contract (docs/design.md).
//
// eps(stream, i) is element i (flat, row-major) of tf.random.stateless_normal(shape, seed) for any
// shape, computed by random access. With libm's log and sincos (box_muller, normal_group, eps_at:
// host-only) it is bit-exact with TensorFlow's CPU kernels (philox_random.h,
// random_distributions_utils.h). The vectorised CPU kernels (simd.h) and the CUDA kernels
// (cuda_common.cuh) reuse the Philox rounds below with one Box-Muller in float operations
// (box_muller_poly), within 2e-6 absolute of TensorFlow's, and so draw the same bits as each other.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FUSEDBNN_HD static __host__ __device__ __forceinline__
#define FUSEDBNN_HOST static __host__ inline
#else
// static: each instruction-set translation unit keeps its own copy (no cross-ISA ODR merging).
#define FUSEDBNN_HD static inline
#define FUSEDBNN_HOST static inline
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

// TensorFlow's Box-Muller with libm (host-only: the kernels use box_muller_poly).
FUSEDBNN_HOST void box_muller(uint32_t x0, uint32_t x1, float* f0, float* f1) {
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
FUSEDBNN_HOST void normal_group(const NoiseStream& s, uint64_t g, float out[4]) {
  const Philox4 r = philox4x32_10(counter_add(s.counter, g), s.key[0], s.key[1]);
  box_muller(r.v[0], r.v[1], &out[0], &out[1]);
  box_muller(r.v[2], r.v[3], &out[2], &out[3]);
}

// Element i of the stream's standard-normal sequence.
FUSEDBNN_HOST float eps_at(const NoiseStream& s, uint64_t i) {
  float group[4];
  normal_group(s, i / 4, group);
  return group[i % 4];
}

// softplus(x) = log(1 + exp(x)), without overflow for large x nor underflow to 0 for x << 0.
FUSEDBNN_HD float stable_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

// Below it, log(softplus(x)) is x in float: softplus(x) = exp(x) (1 - exp(x) / 2 + ...), a relative
// term under 1.1e-9, while softplus(x) itself flushes to 0 below -87.3 (no denormals).
constexpr float kLogSoftplusIsX = -20.0f;

// log(sigma) for sigma = softplus(rho), for every rho (the KL's -log(sigma) term).
FUSEDBNN_HD float log_softplus(float rho, float sigma) { return rho < kLogSoftplusIsX ? rho : logf(sigma); }

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

// Box-Muller in float operations only, over Ops: simd.h's lane traits (the vectorised CPU kernels)
// or cuda_common.cuh's FloatOps (the CUDA kernels), which therefore draw the same bits. Ops supplies
// F, I (int32 lanes), set1, set1_i, fma, mul, sub, max, sqrt, to_float, as_int, as_float, and_i,
// add_i, sub_i, xor_i, srai and slli. Within 1.43e-6 absolute and 8.3e-7 relative to max(1, |eps|)
// of box_muller (benchmarks/NOTES.md).
//
// v = float(double(2 pi) * u), u from the low 23 bits of x, as TensorFlow rounds it: (2 pi_hi +
// 2 pi_lo) u in one rounding, the small part's product (2^-24 of v) rounded first, with u * 2^23
// (exact) and the scale in the constants. TensorFlow's v for each of the 2^23 values of u
// (benchmarks/noise_cycles.cc checks them all).
template <class Ops>
FUSEDBNN_HD typename Ops::F box_muller_angle(typename Ops::I x) {
  using F = typename Ops::F;
  const F k = Ops::to_float(Ops::and_i(x, Ops::set1_i(0x7fffff)));
  const F two_pi_hi = Ops::set1(6.28318548202514648f / 8388608.0f);
  const F two_pi_lo = Ops::set1(-1.7484556000744883e-07f / 8388608.0f);
  return Ops::fma(two_pi_hi, k, Ops::mul(two_pi_lo, k));
}

// (r sin v, r cos v) with r = sqrt(-2 log u1), v = 2 pi u, u1 and u from the low 23 bits of x1, x2.
// -2 log(u1) uses an integer split at sqrt(1/2) and a degree-7 fit of (-2 log1p(-g/2) - g) / g^2
// (relative error 1e-7); sin and cos come from a half-turn reduction to [-pi/2, pi/2] with one
// shared sign (absolute error 1.1e-7).
template <class Ops>
FUSEDBNN_HD void box_muller_poly(typename Ops::I x1, typename Ops::I x2, typename Ops::F* sin_out,
                                 typename Ops::F* cos_out) {
  using F = typename Ops::F;
  using I = typename Ops::I;
  const I mantissa = Ops::set1_i(0x7fffff);
  // u1 * 2^23 (the 23 low bits, an exact conversion), at least TensorFlow's 1e-7 (times 2^23).
  const F k1 = Ops::max(Ops::to_float(Ops::and_i(x1, mantissa)), Ops::set1(1.0e-7f * 8388608.0f));
  // k1 = 2^e m with m in [sqrt(1/2), sqrt(2)): e from the exponent field offset by sqrt(1/2),
  // less 23 for the scale.
  const I sqrt_half = Ops::set1_i(0x3f3504f3);
  const I offset = Ops::sub_i(Ops::as_int(k1), Ops::set1_i(0x3f3504f3 + (23 << 23)));
  const F e = Ops::to_float(Ops::srai(offset, 23));
  const F m = Ops::as_float(Ops::add_i(Ops::and_i(offset, mantissa), sqrt_half));
  // -2 log(u1) = -2 ln2 e + g + g^2 R(g), with g = -2 (m - 1) exact.
  const F g = Ops::fma(m, Ops::set1(-2.0f), Ops::set1(2.0f));
  const F z = Ops::mul(g, g);
  // R in Estrin's form: half the latency of Horner's on the longest chain of the normal.
  const F z2 = Ops::mul(z, z);
  const F r01 = Ops::fma(Ops::set1(8.33348706e-2f), g, Ops::set1(2.49999955e-1f));
  const F r23 = Ops::fma(Ops::set1(1.24763586e-2f), g, Ops::set1(3.12522911e-2f));
  const F r45 = Ops::fma(Ops::set1(2.33052392e-3f), g, Ops::set1(5.17778238e-3f));
  const F r67 = Ops::fma(Ops::set1(3.41950596e-4f), g, Ops::set1(1.11854414e-3f));
  const F p = Ops::fma(Ops::fma(r67, z, r45), z2, Ops::fma(r23, z, r01));
  const F minus_two_log = Ops::fma(e, Ops::set1(-1.38629436f), Ops::fma(z, p, g));
  const F radius = Ops::sqrt(minus_two_log);

  const F v = box_muller_angle<Ops>(x2);
  // v = x + n pi, n = round(v / pi) in {0, 1, 2} (its parity is the low bit of `rounded`);
  // x = v - n pi_hi is exact for v < 2 pi, the pi_lo term rounds once.
  const F round_magic = Ops::set1(12582912.0f);  // 1.5 * 2^23
  const F rounded = Ops::fma(v, Ops::set1(0.318309886f), round_magic);
  const F n = Ops::sub(rounded, round_magic);
  F x = Ops::fma(n, Ops::set1(-3.14159274f), v);
  x = Ops::fma(n, Ops::set1(8.74227766e-8f), x);
  // sin(v) = (-1)^n sin(x), cos(v) = (-1)^n cos(x): the sign goes on the radius.
  const F signed_radius = Ops::as_float(Ops::xor_i(Ops::as_int(radius), Ops::slli(Ops::as_int(rounded), 31)));
  const F xx = Ops::mul(x, x);
  F sp = Ops::set1(2.59993885e-6f);
  sp = Ops::fma(sp, xx, Ops::set1(-1.98065696e-4f));
  sp = Ops::fma(sp, xx, Ops::set1(8.33301712e-3f));
  sp = Ops::fma(sp, xx, Ops::set1(-1.66666567e-1f));
  const F sin_x = Ops::fma(Ops::mul(x, xx), sp, x);
  F cp = Ops::set1(-2.60756678e-7f);
  cp = Ops::fma(cp, xx, Ops::set1(2.47618118e-5f));
  cp = Ops::fma(cp, xx, Ops::set1(-1.38884026e-3f));
  cp = Ops::fma(cp, xx, Ops::set1(4.16666418e-2f));
  cp = Ops::fma(cp, xx, Ops::set1(-0.5f));
  const F cos_x = Ops::fma(xx, cp, Ops::set1(1.0f));
  *sin_out = Ops::mul(sin_x, signed_radius);
  *cos_out = Ops::mul(cos_x, signed_radius);
}

}  // namespace fusedbnn
