#include "gaussian.h"

#include <algorithm>
#include <vector>

#include "cpu_features.h"

namespace fusedbnn {

#if defined(FUSEDBNN_HAVE_AVX2)
const GaussianKernels& avx2_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
const GaussianKernels& avx512_kernels();
#endif

const GaussianKernels& best_kernels() {
  switch (active_isa()) {
#if defined(FUSEDBNN_HAVE_AVX512)
    case Isa::kAvx512:
      return avx512_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
    case Isa::kAvx2:
      return avx2_kernels();
#endif
    default:
      return exact_kernels();
  }
}

namespace {

// Fixed work units (a multiple of every kernel block): the split never changes a result.
constexpr int64_t kChunk = 8192;
constexpr int64_t kCyclesPerElement = 40;

template <class Fn>
void for_chunks(const ParallelFor& pf, int64_t n, Fn fn) {
  pf(ceil_div(n, kChunk), kChunk * kCyclesPerElement, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk));
  });
}

}  // namespace

void sample_gaussian(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                     float* w) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) { k.sample(s, lo, hi, mu + lo, rho + lo, w + lo); });
}

void sample_gaussian_grad(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* dw, const float* mu,
                          const float* rho, float* drho, float* w) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    k.sample_grad(s, lo, hi, dw + lo, mu + lo, rho + lo, drho + lo, w == nullptr ? nullptr : w + lo);
  });
}

float gaussian_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                  float mu_prior, float std_prior) {
  const GaussianKernels& k = best_kernels();
  std::vector<double> partial(ceil_div(n, kChunk), 0.0);
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    partial[lo / kChunk] = k.kl_sum(s, lo, hi, mu + lo, rho + lo, mu_prior, std_prior);
  });
  double total = 0.0;
  for (double p : partial) total += p;  // in chunk order: deterministic
  return static_cast<float>(total);
}

void gaussian_kl_grad(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                      float mu_prior, float std_prior, float dkl, float* dmu, float* drho) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    k.kl_grad(s, lo, hi, mu + lo, rho + lo, mu_prior, std_prior, dkl, dmu + lo, drho + lo);
  });
}

}  // namespace fusedbnn
