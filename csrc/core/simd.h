// Lane-parallel building blocks for the CPU noise kernels: one traits struct per instruction set.
// Each traits struct is only visible in the translation unit compiled for its instruction set
// (gaussian_avx2.cc, gaussian_avx512.cc); gaussian_scalar.cc uses ScalarExact, which calls libm and
// so reproduces TensorFlow bit for bit. The vector log / exp are Cephes-style polynomials
// (the ones of avx_mathfun): relative error about 1e-7. The Box-Muller maths of the noise is
// noise.h's box_muller_poly, shared with the CUDA kernels.
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

  // log(1 + e) for e in [0, 1] (noise.h): what softplus needs, at half the cost of a log.
  static F log1p_unit(F e) { return fusedbnn::log1p_unit<T>(e); }

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
  static I srai(I a, int n) { return _mm512_srai_epi32(a, n); }
  // Philox in 64-bit slots (NormalGen in gaussian_impl.h): a 32-bit value in the low half of each
  // slot, products as whole 64-bit slots.
  static I mul_wide(I a, I m) { return _mm512_mul_epu32(a, m); }
  static I swap_halves(I a) { return _mm512_shuffle_epi32(a, _MM_PERM_CDAB); }
  static I xor3(I a, I b, I c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
  // The even 32-bit lanes of a, the odd ones of b.
  static I blend_odd(I a, I b) { return _mm512_mask_blend_epi32(0xAAAA, a, b); }
  // The Philox group of each 64-bit slot of a slot vector (see store_pairs): 0, 4, 1, 5, 2, 6, 3, 7.
  static I slot_groups() { return _mm512_set_epi32(0, 7, 0, 3, 0, 6, 0, 2, 0, 5, 0, 1, 0, 4, 0, 0); }
  // unpacklo / unpackhi: (a[0], b[0], a[1], b[1]) of each 128-bit lane, i.e. the even 64-bit slots
  // of a and b interleaved, then the odd ones.
  static void store_pairs(F a, F b, float* out) {
    _mm512_storeu_ps(out, _mm512_unpacklo_ps(a, b));
    _mm512_storeu_ps(out + kLanes, _mm512_unpackhi_ps(a, b));
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
  static I srai(I a, int n) { return _mm256_srai_epi32(a, n); }
  static I mul_wide(I a, I m) { return _mm256_mul_epu32(a, m); }
  static I swap_halves(I a) { return _mm256_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)); }
  static I xor3(I a, I b, I c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
  static I blend_odd(I a, I b) { return _mm256_blend_epi32(a, b, 0xAA); }
  static I slot_groups() { return _mm256_set_epi32(0, 3, 0, 1, 0, 2, 0, 0); }
  static void store_pairs(F a, F b, float* out) {
    _mm256_storeu_ps(out, _mm256_unpacklo_ps(a, b));
    _mm256_storeu_ps(out + kLanes, _mm256_unpackhi_ps(a, b));
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
