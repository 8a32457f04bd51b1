// Lane-parallel building blocks for the CPU noise kernels: one traits struct per instruction set.
// Each traits struct is only visible in the translation unit compiled for its instruction set
// (gaussian_avx2.cc, gaussian_avx512.cc); gaussian_scalar.cc uses ScalarExact, which calls libm and
// so reproduces TensorFlow bit for bit. The vector log / exp / sincos are Cephes-style polynomials
// (the ones of avx_mathfun): relative error about 1e-7, which keeps every normal within 2e-6 absolute
// of TensorFlow's (log keeps its relative accuracy near 1, where Box-Muller's radius goes to 0).
#pragma once

#include <cmath>
#include <cstdint>

#include "noise.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fusedbnn {
namespace simd {

// Shared polynomial maths over any float-vector traits T (F: float vector, I: int32 vector).
template <class T>
struct PolyMath {
  using F = typename T::F;
  using I = typename T::I;

  static F log(F x) {
    x = T::max(x, T::set1(1.17549435e-38f));
    I bits = T::as_int(x);
    F e = T::add(T::to_float(T::sub_i(T::srli(bits, 23), T::set1_i(0x7f))), T::set1(1.0f));
    x = T::as_float(T::or_i(T::and_i(bits, T::set1_i(~0x7f800000)), T::as_int(T::set1(0.5f))));
    // Map the mantissa from [0.5, 1) to [sqrt(0.5), sqrt(2)) so that f = x - 1 is small.
    const auto small = T::lt(x, T::set1(0.707106781186547524f));
    const F add_back = T::select(small, x, T::set1(0.0f));
    x = T::sub(x, T::set1(1.0f));
    e = T::sub(e, T::select(small, T::set1(1.0f), T::set1(0.0f)));
    x = T::add(x, add_back);
    const F z = T::mul(x, x);
    F y = T::set1(7.0376836292e-2f);
    y = T::fma(y, x, T::set1(-1.1514610310e-1f));
    y = T::fma(y, x, T::set1(1.1676998740e-1f));
    y = T::fma(y, x, T::set1(-1.2420140846e-1f));
    y = T::fma(y, x, T::set1(1.4249322787e-1f));
    y = T::fma(y, x, T::set1(-1.6668057665e-1f));
    y = T::fma(y, x, T::set1(2.0000714765e-1f));
    y = T::fma(y, x, T::set1(-2.4999993993e-1f));
    y = T::fma(y, x, T::set1(3.3333331174e-1f));
    y = T::mul(T::mul(y, x), z);
    y = T::fma(e, T::set1(-2.12194440e-4f), y);
    y = T::fma(z, T::set1(-0.5f), y);
    x = T::add(x, y);
    return T::fma(e, T::set1(0.693359375f), x);
  }

  // exp for x in [-87.3, 88.7] (clamped outside): softplus never needs more.
  static F exp(F x) {
    // x last: x86 min/max return their second operand when either is NaN, so NaN stays NaN.
    x = T::min(T::set1(88.3762626647949f), T::max(T::set1(-87.3f), x));
    const F fx = T::floor(T::fma(x, T::set1(1.44269504088896341f), T::set1(0.5f)));
    x = T::fma(fx, T::set1(-0.693359375f), x);
    x = T::fma(fx, T::set1(2.12194440e-4f), x);
    const F z = T::mul(x, x);
    F y = T::set1(1.9875691500e-4f);
    y = T::fma(y, x, T::set1(1.3981999507e-3f));
    y = T::fma(y, x, T::set1(8.3334519073e-3f));
    y = T::fma(y, x, T::set1(4.1665795894e-2f));
    y = T::fma(y, x, T::set1(1.6666665459e-1f));
    y = T::fma(y, x, T::set1(5.0000001201e-1f));
    y = T::fma(y, z, T::add(x, T::set1(1.0f)));
    const I pow2n = T::slli(T::add_i(T::to_int(fx), T::set1_i(0x7f)), 23);
    return T::mul(y, T::as_float(pow2n));
  }

  // 1 / x: the hardware estimate refined by one Newton step (a division costs several times more).
  static F recip(F x) {
    const F r = T::rcp_estimate(x);
    return T::mul(r, T::fma(T::sub(T::set1(0.0f), x), r, T::set1(2.0f)));
  }

  // log(1 + e) for e in [0, 1], the only range softplus needs: one polynomial e * P(e), P a degree-8
  // Chebyshev fit of log1p(e) / e (relative error 2e-7 in float, as the log above), about half the
  // cost of log(1 + e) with the rounding correction that tiny e needs.
  static F log1p_unit(F e) {
    F y = T::set1(5.25345793e-3f);
    y = T::fma(y, e, T::set1(-2.95885075e-2f));
    y = T::fma(y, e, T::set1(7.83616677e-2f));
    y = T::fma(y, e, T::set1(-1.36747703e-1f));
    y = T::fma(y, e, T::set1(1.91114306e-1f));
    y = T::fma(y, e, T::set1(-2.48443693e-1f));
    y = T::fma(y, e, T::set1(3.33192706e-1f));
    y = T::fma(y, e, T::set1(-4.99995023e-1f));
    y = T::fma(y, e, T::set1(1.0f));
    return T::mul(y, e);
  }

  // softplus(x) = max(x, 0) + log1p(exp(-|x|)) and sigmoid(x), sharing one exp.
  static void softplus_sigmoid(F x, F* softplus, F* sigmoid) {
    const F e = exp(T::sub(T::set1(0.0f), T::abs(x)));
    *softplus = T::add(T::max(x, T::set1(0.0f)), log1p_unit(e));
    const F inv = recip(T::add(T::set1(1.0f), e));  // sigmoid(|x|)
    *sigmoid = T::select(T::lt(x, T::set1(0.0f)), T::mul(e, inv), inv);
  }

  static F softplus(F x) { return T::add(T::max(x, T::set1(0.0f)), log1p_unit(exp(T::sub(T::set1(0.0f), T::abs(x))))); }

  static F sigmoid(F x) {
    F sp, sg;
    softplus_sigmoid(x, &sp, &sg);
    return sg;
  }

  // sin and cos of x in [0, 2*pi], Cephes sinf/cosf with a three-part pi/4 reduction.
  static void sincos(F x, F* s, F* c) {
    I j = T::to_int_trunc(T::mul(x, T::set1(1.27323954473516f)));
    j = T::and_i(T::add_i(j, T::set1_i(1)), T::set1_i(~1));
    const F y = T::to_float(j);
    const I sin_sign = T::slli(T::and_i(j, T::set1_i(4)), 29);
    const I cos_sign = T::slli(T::and_i(T::sub_i(j, T::set1_i(2)), T::set1_i(4)), 29);
    const auto use_cos_poly = T::eq_i(T::and_i(j, T::set1_i(2)), T::set1_i(2));
    x = T::fma(y, T::set1(-0.78515625f), x);
    x = T::fma(y, T::set1(-2.4187564849853515625e-4f), x);
    x = T::fma(y, T::set1(-3.77489497744594108e-8f), x);
    const F z = T::mul(x, x);
    F cp = T::set1(2.443315711809948e-5f);
    cp = T::fma(cp, z, T::set1(-1.388731625493765e-3f));
    cp = T::fma(cp, z, T::set1(4.166664568298827e-2f));
    cp = T::mul(T::mul(cp, z), z);
    cp = T::fma(z, T::set1(-0.5f), cp);
    cp = T::add(cp, T::set1(1.0f));
    F sp = T::set1(-1.9515295891e-4f);
    sp = T::fma(sp, z, T::set1(8.3321608736e-3f));
    sp = T::fma(sp, z, T::set1(-1.6666654611e-1f));
    sp = T::fma(T::mul(sp, z), x, x);
    const F sin_r = T::select_i(use_cos_poly, cp, sp);
    const F cos_r = T::select_i(use_cos_poly, sp, cp);
    *s = T::as_float(T::xor_i(T::as_int(sin_r), sin_sign));
    *c = T::as_float(T::xor_i(T::as_int(cos_r), T::xor_i(cos_sign, T::set1_i(static_cast<int>(0x80000000u)))));
  }
};

#if defined(__AVX512F__)
struct Avx512 {
  static constexpr int kLanes = 16;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static I set1_i(int v) { return _mm512_set1_epi32(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F rcp_estimate(F a) { return _mm512_rcp14_ps(a); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F abs(F a) { return _mm512_abs_ps(a); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F floor(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M eq_i(I a, I b) { return _mm512_cmpeq_epi32_mask(a, b); }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static F select_i(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static I as_int(F a) { return _mm512_castps_si512(a); }
  static F as_float(I a) { return _mm512_castsi512_ps(a); }
  static F to_float(I a) { return _mm512_cvtepi32_ps(a); }
  static I to_int(F a) { return _mm512_cvtps_epi32(a); }
  static I to_int_trunc(F a) { return _mm512_cvttps_epi32(a); }
  static I add_i(I a, I b) { return _mm512_add_epi32(a, b); }
  static I sub_i(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I and_i(I a, I b) { return _mm512_and_si512(a, b); }
  static I or_i(I a, I b) { return _mm512_or_si512(a, b); }
  static I xor_i(I a, I b) { return _mm512_xor_si512(a, b); }
  static I srli(I a, int n) { return _mm512_srli_epi32(a, n); }
  static I slli(I a, int n) { return _mm512_slli_epi32(a, n); }
  static I lane_index() { return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0); }
  static void mul_hi_lo(I a, uint32_t m, I* hi, I* lo) {
    const I mv = _mm512_set1_epi32(static_cast<int>(m));
    const I even = _mm512_mul_epu32(a, mv);
    const I odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), mv);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  }
  // out[4 * l + j] = n[j][l]: the normals of 16 Philox groups back in flat order.
  static void interleave4(const F n[4], float* out) {
    const I lo_pairs = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const I hi_pairs = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512d a_lo = _mm512_castps_pd(_mm512_permutex2var_ps(n[0], lo_pairs, n[1]));
    const __m512d a_hi = _mm512_castps_pd(_mm512_permutex2var_ps(n[0], hi_pairs, n[1]));
    const __m512d b_lo = _mm512_castps_pd(_mm512_permutex2var_ps(n[2], lo_pairs, n[3]));
    const __m512d b_hi = _mm512_castps_pd(_mm512_permutex2var_ps(n[2], hi_pairs, n[3]));
    const __m512i first = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i second = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    _mm512_storeu_pd(out, _mm512_permutex2var_pd(a_lo, first, b_lo));
    _mm512_storeu_pd(out + 16, _mm512_permutex2var_pd(a_lo, second, b_lo));
    _mm512_storeu_pd(out + 32, _mm512_permutex2var_pd(a_hi, first, b_hi));
    _mm512_storeu_pd(out + 48, _mm512_permutex2var_pd(a_hi, second, b_hi));
  }
  static float reduce_add(F v) { return _mm512_reduce_add_ps(v); }
};
#endif

#if defined(__AVX2__)
struct Avx2 {
  static constexpr int kLanes = 8;
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  static F set1(float v) { return _mm256_set1_ps(v); }
  static I set1_i(int v) { return _mm256_set1_epi32(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F rcp_estimate(F a) { return _mm256_rcp_ps(a); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F floor(F a) { return _mm256_floor_ps(a); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static I eq_i(I a, I b) { return _mm256_cmpeq_epi32(a, b); }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static F select_i(I m, F a, F b) { return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m)); }
  static I as_int(F a) { return _mm256_castps_si256(a); }
  static F as_float(I a) { return _mm256_castsi256_ps(a); }
  static F to_float(I a) { return _mm256_cvtepi32_ps(a); }
  static I to_int(F a) { return _mm256_cvtps_epi32(a); }
  static I to_int_trunc(F a) { return _mm256_cvttps_epi32(a); }
  static I add_i(I a, I b) { return _mm256_add_epi32(a, b); }
  static I sub_i(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I and_i(I a, I b) { return _mm256_and_si256(a, b); }
  static I or_i(I a, I b) { return _mm256_or_si256(a, b); }
  static I xor_i(I a, I b) { return _mm256_xor_si256(a, b); }
  static I srli(I a, int n) { return _mm256_srli_epi32(a, n); }
  static I slli(I a, int n) { return _mm256_slli_epi32(a, n); }
  static I lane_index() { return _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0); }
  static void mul_hi_lo(I a, uint32_t m, I* hi, I* lo) {
    const I mv = _mm256_set1_epi32(static_cast<int>(m));
    const I even = _mm256_mul_epu32(a, mv);
    const I odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mv);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  }
  // out[4 * l + j] = n[j][l] for the 8 lanes l.
  static void interleave4(const F n[4], float* out) {
    const F a_lo = _mm256_unpacklo_ps(n[0], n[1]);  // n0[0] n1[0] n0[1] n1[1] | n0[4] n1[4] n0[5] n1[5]
    const F a_hi = _mm256_unpackhi_ps(n[0], n[1]);  // lanes 2, 3 | 6, 7
    const F b_lo = _mm256_unpacklo_ps(n[2], n[3]);
    const F b_hi = _mm256_unpackhi_ps(n[2], n[3]);
    const F g0 = _mm256_shuffle_ps(a_lo, b_lo, _MM_SHUFFLE(1, 0, 1, 0));  // groups 0 | 4
    const F g1 = _mm256_shuffle_ps(a_lo, b_lo, _MM_SHUFFLE(3, 2, 3, 2));  // groups 1 | 5
    const F g2 = _mm256_shuffle_ps(a_hi, b_hi, _MM_SHUFFLE(1, 0, 1, 0));  // groups 2 | 6
    const F g3 = _mm256_shuffle_ps(a_hi, b_hi, _MM_SHUFFLE(3, 2, 3, 2));  // groups 3 | 7
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(g0, g1, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(g2, g3, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(g0, g1, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(g2, g3, 0x31));
  }
  static float reduce_add(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
#endif

// One lane, libm maths: the exact reference and the fallback for CPUs without AVX2.
struct ScalarExact {
  static constexpr int kLanes = 1;
  using F = float;
  static F set1(float v) { return v; }
  static F load(const float* p) { return *p; }
  static void store(float* p, F v) { *p = v; }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F fma(F a, F b, F c) { return a * b + c; }
  static F softplus(F x) { return stable_softplus(x); }
  static F sigmoid(F x) { return fusedbnn::sigmoid(x); }
  static void softplus_sigmoid(F x, F* softplus, F* sigmoid) {
    *softplus = stable_softplus(x);
    *sigmoid = fusedbnn::sigmoid(x);
  }
  static F log(F x) { return logf(x); }
  static float reduce_add(F v) { return v; }
};

}  // namespace simd
}  // namespace fusedbnn
