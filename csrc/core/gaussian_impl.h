// The elementwise Gaussian kernels, written once over a lane traits type T (simd.h) and compiled
// once per instruction set by gaussian_{scalar,avx2,avx512}.cc.
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <type_traits>

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

// Standard normals in blocks of 64 consecutive flat elements (16 Philox groups).
//
// Philox runs on 32-bit values held in the low halves of 64-bit slots, kLanes / 2 groups to a "slot
// vector", one vector per word: a multiply is then one 32x32 -> 64 `mul_wide` whose slot holds lo
// (low half) and hi (high half), and one in-slot swap brings hi down; the high halves carry garbage
// that nothing reads. The slots hold groups in the order of slot_groups() so that Box-Muller on
// (r0 | r2 of a group side by side) gives its four normals in flat order after one unpack
// (store_pairs). Box-Muller is noise.h's box_muller_poly, the CUDA kernels' too.
template <class T>
class NormalGen {
 public:
  // 64 normals a block on every instruction set: kHalves slot vectors, whose independent chains
  // hide the latency of Philox's multiply-shuffle-xor rounds.
  static constexpr int kBlock = 64;
  static constexpr int kHalves = kBlock / (2 * T::kLanes);
  using F = typename T::F;
  using I = typename T::I;

  explicit NormalGen(const NoiseStream& st) : st_(st), start_(start_of(st.counter[1], st.counter[2], st.counter[3])) {
    for (int round = 0; round < 10; ++round) {
      key0_[round] = T::set1_i(static_cast<int>(round_key(0, round)));
      key1_[round] = T::set1_i(static_cast<int>(round_key(1, round)));
    }
    last_key_ = T::blend_odd(key0_[9], key1_[9]);
  }

  // A block's Philox outputs paired for Box-Muller: (r0 | r2) and (r1 | r3) of each group.
  struct Words {
    I first[kHalves], second[kHalves];
    bool exact;  // the lanes' counters carry into the next word: the scalar path makes the block
  };

  // Philox of a block into *w (the long dependency chains of its normals) ...
  void words(uint64_t block, Words* w) const {
    constexpr int kGroups = kBlock / 4;
    const Philox4 base = counter_add(st_.counter, block * kGroups);
    w->exact = base.v[0] > 0xFFFFFFFFu - (kGroups - 1);
    if (w->exact) return;
    // The words above the first are those of the stream's counter, but after a carry.
    Start carried;
    const Start* start = &start_;
    if (base.v[1] != start_.v[0] || base.v[2] != start_.v[1] || base.v[3] != start_.v[2]) {
      carried = start_of(base.v[1], base.v[2], base.v[3]);
      start = &carried;
    }
    static_assert(kHalves % 2 == 0, "slot vectors go through Philox in pairs");
    for (int h0 = 0; h0 < kHalves; h0 += 2) philox_pair(base.v[0], *start, h0, w);
  }

  // ... then Box-Muller into out[0, kBlock) in flat order (short, wide work). map_range calls
  // words() of the next block before finish() of this one, so that the two overlap.
  void finish(uint64_t block, const Words& w, float* out) const {
    constexpr int kGroups = kBlock / 4;
    if (w.exact) {
      for (int l = 0; l < kGroups; ++l) normal_group(st_, block * kGroups + l, out + 4 * l);
      return;
    }
    for (int h = 0; h < kHalves; ++h) {
      F s, co;
      box_muller_poly<T>(w.first[h], w.second[h], &s, &co);
      T::store_pairs(s, co, out + 2 * T::kLanes * h);
    }
  }

  // The lanes of a block differ only in the counter's first word c0: its other words (v1, v2, v3)
  // are the same in every lane, and so is everything of the first two rounds that does not come
  // from c0. Those parts, as the xor operands of the rounds' varying words (notation of noise.h):
  //   round 1: c2 = hi(M0 c0) ^ (v3 ^ k1);            c0, c1 are lane-free (a0, a1 below)
  //   round 2: c0 = hi(M1 c2) ^ (a1 ^ k0);  c2 = c3 ^ (hi(M0 a0) ^ k1);  c3 = lo(M0 a0)
  //   round 3: c2 = hi(M0 c0) ^ (lo(M0 a0) ^ k1)
  struct Start {
    uint32_t v[3];
    I round1_c2, round2_c0, round2_c2, round3_c2;
  };
  Start start_of(uint32_t v1, uint32_t v2, uint32_t v3) const {
    uint32_t hi, lo, a0, a1;
    mul_hi_lo(kPhiloxM4x32B, v2, &hi, &a1);
    a0 = hi ^ v1 ^ round_key(0, 0);
    mul_hi_lo(kPhiloxM4x32A, a0, &hi, &lo);
    auto lanes = [](uint32_t x) { return T::set1_i(static_cast<int>(x)); };
    return Start{{v1, v2, v3},
                 lanes(v3 ^ round_key(1, 0)),
                 lanes(a1 ^ round_key(0, 1)),
                 lanes(hi ^ round_key(1, 1)),
                 lanes(lo ^ round_key(1, 2))};
  }

  // Philox4x32-10 of slot vectors h0 and h0 + 1 of the block whose first group's counter has first
  // word c0 (the others in start). Their 8 words stay in registers (16 on AVX2). Unrolled whole:
  // GCC would keep a loop with the state in memory.
  void philox_pair(uint32_t c0, const Start& start, int h0, Words* w) const {
    const I ma = T::set1_i(static_cast<int>(kPhiloxM4x32A)), mb = T::set1_i(static_cast<int>(kPhiloxM4x32B));
    I c[2][4];
    for (int h = 0; h < 2; ++h) {
      // Rounds 1 and 2: the lane-free parts come from start.
      const I pa =
          T::mul_wide(T::add_i(T::set1_i(static_cast<int>(c0 + (h0 + h) * T::kLanes / 2)), T::slot_groups()), ma);
      const I c2 = T::xor_i(T::swap_halves(pa), start.round1_c2);
      const I pb = T::mul_wide(c2, mb);
      c[h][0] = T::xor_i(T::swap_halves(pb), start.round2_c0);
      c[h][1] = pb;
      c[h][2] = T::xor_i(pa, start.round2_c2);
    }
#pragma GCC unroll 7
    for (int round = 2; round < 9; ++round) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const I pa = T::mul_wide(c[h][0], ma), pb = T::mul_wide(c[h][2], mb);
        c[h][0] = T::xor3(T::swap_halves(pb), c[h][1], key0_[round]);
        c[h][1] = pb;
        // Round 3's c3 is lane-free (round3_c2 holds it with its key); later ones are products.
        c[h][2] = round == 2 ? T::xor_i(T::swap_halves(pa), start.round3_c2)
                             : T::xor3(T::swap_halves(pa), c[h][3], key1_[round]);
        c[h][3] = pa;
      }
    }
    // Round 10 writes the pairs: first = (c0 | c2), second = (c1 | c3) of each group.
    for (int h = 0; h < 2; ++h) {
      const I pa = T::mul_wide(c[h][0], ma), pb = T::mul_wide(c[h][2], mb);
      w->first[h0 + h] =
          T::xor3(T::blend_odd(T::swap_halves(pb), pa), T::blend_odd(c[h][1], T::swap_halves(c[h][3])), last_key_);
      w->second[h0 + h] = T::blend_odd(pb, T::swap_halves(pa));
    }
  }

 private:
  uint32_t round_key(int word, int round) const {
    return st_.key[word] + static_cast<uint32_t>(round) * (word == 0 ? kPhiloxW32A : kPhiloxW32B);
  }

  NoiseStream st_;
  Start start_;
  I key0_[10], key1_[10], last_key_;
};

template <>
class NormalGen<ScalarExact> {
 public:
  static constexpr int kBlock = 4;
  struct Words {};
  explicit NormalGen(const NoiseStream& st) : st_(st) {}
  void words(uint64_t, Words*) const {}
  void finish(uint64_t block, const Words&, float* out) const { normal_group(st_, block, out); }

 private:
  NoiseStream st_;
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
  const NormalGen<T> gen(st);
  typename NormalGen<T>::Words words[2];
  const int64_t first_block = begin / B, end_block = ceil_div(end, B);
  gen.words(first_block, &words[0]);
  for (int64_t block = first_block; block < end_block; ++block) {
    // The next block's Philox first: its chains are independent of this block's Box-Muller, so the
    // two overlap in the out-of-order window.
    const int64_t i = block - first_block;
    if (block + 1 < end_block) gen.words(block + 1, &words[(i + 1) & 1]);
    gen.finish(block, words[i & 1], eps);
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

// Runs body(in..., out...) on lane vectors over n elements, without noise; the last partial vector
// is computed padded (inputs 0) in local buffers.
template <class T, size_t NIn, size_t NOut, class Body>
void map_plain(int64_t n, const std::array<const float*, NIn>& in, const std::array<float*, NOut>& out, Body body) {
  using F = typename T::F;
  constexpr int L = T::kLanes;
  auto run = [&](const std::array<const float*, NIn>& src, const std::array<float*, NOut>& dst, int64_t i) {
    F x[NIn], y[NOut];
    for (size_t j = 0; j < NIn; ++j) x[j] = T::load(src[j] + i);
    body(x, y);
    for (size_t j = 0; j < NOut; ++j) T::store(dst[j] + i, y[j]);
  };
  int64_t i = 0;
  for (; i + L <= n; i += L) run(in, out, i);
  if (i == n) return;
  alignas(64) float local_in[NIn][L] = {};
  alignas(64) float local_out[NOut][L];
  std::array<const float*, NIn> src;
  std::array<float*, NOut> dst;
  const size_t bytes = (n - i) * sizeof(float);
  for (size_t j = 0; j < NIn; ++j) src[j] = static_cast<const float*>(std::memcpy(local_in[j], in[j] + i, bytes));
  for (size_t j = 0; j < NOut; ++j) dst[j] = local_out[j];
  run(src, dst, 0);
  for (size_t j = 0; j < NOut; ++j) std::memcpy(out[j] + i, local_out[j], bytes);
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

  // Runs term(e, mu, rho, prior_mean, extra, y) over [begin, end) of mu and rho, e the noise with
  // kNoise (st not null), else zero; the prior mean is one broadcast value or the per-element input;
  // extra is the input `extra` when not null, else zero.
  template <bool kNoise, size_t NOut, class Term>
  static void map_with_prior(const NoiseStream* st, int64_t begin, int64_t end, const float* mu, const float* rho,
                             const GaussianPrior& prior, const std::array<float*, NOut>& out, Term term,
                             const float* extra = nullptr) {
    auto map = [&](const auto& in, auto body) {
      constexpr size_t NIn = std::tuple_size<std::decay_t<decltype(in)>>::value;
      if constexpr (kNoise) {
        map_range<T, NIn, NOut>(*st, begin, end, in, out, body);
      } else {
        map_plain<T, NIn, NOut>(end - begin, in, out, [&](const F* x, F* y) { body(M::set1(0.0f), x, y); });
      }
    };
    const F zero = M::set1(0.0f);
    if (prior.per_element && extra != nullptr) {
      map(std::array<const float*, 4>{mu, rho, prior.mean, extra},
          [&](F e, const F* x, F* y) { term(e, x[0], x[1], x[2], x[3], y); });
    } else if (prior.per_element) {
      map(std::array<const float*, 3>{mu, rho, prior.mean},
          [&](F e, const F* x, F* y) { term(e, x[0], x[1], x[2], zero, y); });
    } else if (extra != nullptr) {
      const F mean = M::set1(*prior.mean);
      map(std::array<const float*, 3>{mu, rho, extra},
          [&](F e, const F* x, F* y) { term(e, x[0], x[1], mean, x[2], y); });
    } else {
      const F mean = M::set1(*prior.mean);
      map(std::array<const float*, 2>{mu, rho}, [&](F e, const F* x, F* y) { term(e, x[0], x[1], mean, zero, y); });
    }
  }

  // Sums term(e, mu, rho, prior_mean) over [begin, end) in pieces, each summed in lane order.
  template <bool kNoise, class Term>
  static double sum_with_prior(const NoiseStream* st, int64_t begin, int64_t end, const float* mu, const float* rho,
                               const GaussianPrior& prior, Term term) {
    constexpr int64_t kPiece = 4096;
    alignas(64) float terms[kPiece];
    double total = 0.0;
    for (int64_t lo = begin; lo < end; lo += kPiece) {
      const int64_t hi = std::min(end, lo + kPiece), offset = lo - begin;
      map_with_prior<kNoise, 1>(st, lo, hi, mu + offset, rho + offset, prior.from(offset), {terms},
                                [&](F e, F m, F r, F mean, F, F* y) { y[0] = term(e, m, r, mean); });
      total += sum(terms, hi - lo);
    }
    return total;
  }

  // sigma = softplus(r) and log(sigma). For r < 0, softplus(r) = e q(e) with e = exp(r) and
  // q(e) = log1p(e) / e, so log(sigma) = r + log q(e): one polynomial in e (a least-squares fit of
  // log q(e) / e on [0, 1], absolute error 3e-8) in place of a log, the KL's costliest term. It
  // holds for every r < 0: where exp clamps its argument (-87.3) and sigma flushes, log q(e) is 0
  // and log(sigma) is r, exact. A vector with a lane r >= 0 (or NaN) takes the log in those lanes.
  static void softplus_log(F r, F* sigma, F* log_sigma) {
    if constexpr (std::is_same_v<T, ScalarExact>) {
      *sigma = M::softplus(r);
      *log_sigma = log_of_softplus(r, *sigma);
    } else {
      const F zero = M::set1(0.0f), e = M::exp(M::sub(zero, M::abs(r)));
      *sigma = M::add(M::max(r, zero), M::log1p_unit(e));
      F p = M::set1(2.00882764e-3f);
      p = M::fma(p, e, M::set1(-1.13769230e-2f));
      p = M::fma(p, e, M::set1(3.06893755e-2f));
      p = M::fma(p, e, M::set1(-5.57775497e-2f));
      p = M::fma(p, e, M::set1(8.41283873e-2f));
      p = M::fma(p, e, M::set1(-1.24473125e-1f));
      p = M::fma(p, e, M::set1(2.08286598e-1f));
      p = M::fma(p, e, M::set1(-4.99998480e-1f));
      const F fast = M::fma(p, e, r);
      const auto negative = M::lt(r, zero);
      if (M::reduce_add(M::select(negative, zero, M::set1(1.0f))) == 0.0f) {
        *log_sigma = fast;
      } else {
        *log_sigma = M::select(negative, fast, M::log(*sigma));
      }
    }
  }

  // log(sigma) of sigma = softplus(r) by noise.h's log_softplus, over lanes.
  static F log_of_softplus(F r, F sigma) {
    if constexpr (std::is_same_v<T, ScalarExact>) {
      return log_softplus(r, sigma);
    } else {
      return M::select(M::lt(r, M::set1(kLogSoftplusIsX)), r, M::log(sigma));
    }
  }

  // 1 / x: the refined hardware estimate on vectors (a division costs several times more).
  static F reciprocal(F x) {
    if constexpr (std::is_same_v<T, ScalarExact>) {
      return M::div(M::set1(1.0f), x);
    } else {
      return M::recip(x);
    }
  }

  // The one-sample KL term of one element: log N(w; mu, sigma) - log N(w; mu_prior, std_prior) at
  // w = mu + sigma e, the 2 pi terms cancelling.
  struct KlTerm {
    F inv_sp, log_sp, half;
    explicit KlTerm(const GaussianPrior& prior)
        : inv_sp(M::set1(1.0f / prior.std)), log_sp(M::set1(logf(prior.std))), half(M::set1(0.5f)) {}
    F operator()(F e, F log_sigma, F w, F mean) const {
      const F z = M::mul(M::sub(w, mean), inv_sp);
      return M::add(M::sub(log_sp, log_sigma), M::mul(half, M::sub(M::mul(z, z), M::mul(e, e))));
    }
  };

  // The gradient of scale * KlTerm plus the upstream dw, for dmu and drho (sigma, dsigma of rho).
  struct KlGrad {
    F g, sc;
    KlGrad(const GaussianPrior& prior, float scale) : g(M::set1(scale / (prior.std * prior.std))), sc(M::set1(scale)) {}
    void operator()(F e, F sigma, F dsigma, F w, F mean, F dw, F* dmu, F* drho) const {
      const F total = M::fma(M::sub(w, mean), g, dw);  // dw + scale * (w - mu_prior) / std_prior^2
      *dmu = total;
      *drho = M::mul(M::sub(M::mul(total, e), M::mul(sc, reciprocal(sigma))), dsigma);
    }
  };

  static double kl_sum(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho,
                       const GaussianPrior& prior) {
    const KlTerm term(prior);
    return sum_with_prior<true>(&st, begin, end, mu, rho, prior, [&](F e, F m, F r, F mean) {
      F sigma, log_sigma;
      softplus_log(r, &sigma, &log_sigma);
      return term(e, log_sigma, M::fma(sigma, e, m), mean);
    });
  }

  static void kl_grad(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho,
                      const GaussianPrior& prior, float scale, float* dmu, float* drho) {
    const KlGrad grad(prior, scale);
    map_with_prior<true, 2>(&st, begin, end, mu, rho, prior, {dmu, drho}, [&](F e, F m, F r, F mean, F, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(r, &sigma, &dsigma);
      grad(e, sigma, dsigma, M::fma(sigma, e, m), mean, M::set1(0.0f), &y[0], &y[1]);
    });
  }

  static double sample_kl(const NoiseStream& st, int64_t begin, int64_t end, const float* mu, const float* rho,
                          const GaussianPrior& prior, float* w) {
    const KlTerm term(prior);
    constexpr int64_t kPiece = 4096;
    alignas(64) float terms[kPiece];
    double total = 0.0;
    for (int64_t lo = begin; lo < end; lo += kPiece) {
      const int64_t hi = std::min(end, lo + kPiece), offset = lo - begin;
      map_with_prior<true, 2>(&st, lo, hi, mu + offset, rho + offset, prior.from(offset), {w + offset, terms},
                              [&](F e, F m, F r, F mean, F, F* y) {
                                F sigma, log_sigma;
                                softplus_log(r, &sigma, &log_sigma);
                                y[0] = M::fma(sigma, e, m);
                                y[1] = term(e, log_sigma, y[0], mean);
                              });
      total += sum(terms, hi - lo);
    }
    return total;
  }

  static void sample_grad_kl(const NoiseStream& st, int64_t begin, int64_t end, const float* dw, const float* mu,
                             const float* rho, const GaussianPrior& prior, float scale, float* dmu, float* drho,
                             float* w) {
    const KlGrad grad(prior, scale);
    auto body = [&](F e, F m, F r, F mean, F d, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(r, &sigma, &dsigma);
      const F sample = M::fma(sigma, e, m);
      grad(e, sigma, dsigma, sample, mean, d, &y[0], &y[1]);
      y[2] = sample;
    };
    if (w != nullptr) {
      map_with_prior<true, 3>(&st, begin, end, mu, rho, prior, {dmu, drho, w}, body, dw);
    } else {
      map_with_prior<true, 2>(
          &st, begin, end, mu, rho, prior, {dmu, drho},
          [&](F e, F m, F r, F mean, F d, F* y) {
            F out[3];
            body(e, m, r, mean, d, out);
            y[0] = out[0];
            y[1] = out[1];
          },
          dw);
    }
  }

  static double kl_analytic_sum(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior) {
    const F inv_2var = M::set1(0.5f / (prior.std * prior.std));
    const F log_sp_minus_half = M::set1(logf(prior.std) - 0.5f);
    return sum_with_prior<false>(nullptr, 0, n, mu, rho, prior, [&](F, F m, F r, F mean) {
      // log(std_prior / sigma) + (sigma^2 + (mu - mu_prior)^2) / (2 std_prior^2) - 1/2
      const F sigma = M::softplus(r), d = M::sub(m, mean);
      return M::add(M::sub(log_sp_minus_half, log_of_softplus(r, sigma)),
                    M::mul(M::fma(sigma, sigma, M::mul(d, d)), inv_2var));
    });
  }

  static void kl_analytic_grad(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior, float scale,
                               float* dmu, float* drho) {
    const F g = M::set1(scale / (prior.std * prior.std)), sc = M::set1(scale);
    map_with_prior<false, 2>(nullptr, 0, n, mu, rho, prior, {dmu, drho}, [&](F, F m, F r, F mean, F, F* y) {
      F sigma, dsigma;
      M::softplus_sigmoid(r, &sigma, &dsigma);
      y[0] = M::mul(M::sub(m, mean), g);  // scale * (mu - mu_prior) / std_prior^2
      y[1] = M::mul(M::sub(M::mul(sigma, g), M::div(sc, sigma)), dsigma);
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
    return GaussianKernels{isa,      &fill_normal, &sample,         &sample_grad,     &kl_sum,
                           &kl_grad, &sample_kl,   &sample_grad_kl, &kl_analytic_sum, &kl_analytic_grad};
  }
};

}  // namespace simd
}  // namespace fusedbnn
