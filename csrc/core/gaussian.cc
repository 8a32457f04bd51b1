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

// Sums per-chunk partial results in chunk order: deterministic whatever the split.
template <class ChunkSum>
float sum_chunks(const ParallelFor& pf, int64_t n, ChunkSum chunk_sum) {
  std::vector<double> partial(ceil_div(n, kChunk), 0.0);
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) { partial[lo / kChunk] = chunk_sum(lo, hi); });
  double total = 0.0;
  for (double p : partial) total += p;
  return static_cast<float>(total);
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
                  const GaussianPrior& prior) {
  const GaussianKernels& k = best_kernels();
  return sum_chunks(pf, n,
                    [&](int64_t lo, int64_t hi) { return k.kl_sum(s, lo, hi, mu + lo, rho + lo, prior.from(lo)); });
}

float sample_gaussian_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                         const GaussianPrior& prior, float* w) {
  const GaussianKernels& k = best_kernels();
  return sum_chunks(
      pf, n, [&](int64_t lo, int64_t hi) { return k.sample_kl(s, lo, hi, mu + lo, rho + lo, prior.from(lo), w + lo); });
}

void sample_gaussian_grad_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* dw, const float* mu,
                             const float* rho, const GaussianPrior& prior, float dkl, float* dmu, float* drho) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    k.sample_grad_kl(s, lo, hi, dw + lo, mu + lo, rho + lo, prior.from(lo), dkl, dmu + lo, drho + lo, nullptr);
  });
}

void gaussian_kl_grad(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                      const GaussianPrior& prior, float dkl, float* dmu, float* drho) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    k.kl_grad(s, lo, hi, mu + lo, rho + lo, prior.from(lo), dkl, dmu + lo, drho + lo);
  });
}

float gaussian_kl_analytic(const ParallelFor& pf, int64_t n, const float* mu, const float* rho,
                           const GaussianPrior& prior) {
  const GaussianKernels& k = best_kernels();
  return sum_chunks(
      pf, n, [&](int64_t lo, int64_t hi) { return k.kl_analytic_sum(hi - lo, mu + lo, rho + lo, prior.from(lo)); });
}

void gaussian_kl_analytic_grad(const ParallelFor& pf, int64_t n, const float* mu, const float* rho,
                               const GaussianPrior& prior, float dkl, float* dmu, float* drho) {
  const GaussianKernels& k = best_kernels();
  for_chunks(pf, n, [&](int64_t lo, int64_t hi) {
    k.kl_analytic_grad(hi - lo, mu + lo, rho + lo, prior.from(lo), dkl, dmu + lo, drho + lo);
  });
}

}  // namespace fusedbnn
