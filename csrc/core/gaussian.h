// Gaussian weight sampling w = mu + softplus(rho) * eps, its gradient, the one-sample KL estimate
// and the closed-form KL, on the CPU. eps is never stored: every function regenerates it from the stream.
//
// Element pointers address flat element `begin` of the parameter (callers offset them), so the same
// kernels serve whole tensors, tiles and embedding rows.
#pragma once

#include <cstdint>

#include "gaussian_prior.h"
#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

// One instruction set's elementwise kernels over the flat index range [begin, end).
struct GaussianKernels {
  const char* isa;
  void (*fill_normal)(const NoiseStream& s, int64_t begin, int64_t end, float* eps);
  void (*sample)(const NoiseStream& s, int64_t begin, int64_t end, const float* mu, const float* rho, float* w);
  // drho = dw * eps * sigmoid(rho); when w is not null also w = mu + softplus(rho) * eps.
  void (*sample_grad)(const NoiseStream& s, int64_t begin, int64_t end, const float* dw, const float* mu,
                      const float* rho, float* drho, float* w);
  // Sum over the range of log N(w; mu, sigma) - log N(w; prior.mean, prior.std), in double.
  double (*kl_sum)(const NoiseStream& s, int64_t begin, int64_t end, const float* mu, const float* rho,
                   const GaussianPrior& prior);
  // dmu, drho of scale * kl_sum (the path through w included).
  void (*kl_grad)(const NoiseStream& s, int64_t begin, int64_t end, const float* mu, const float* rho,
                  const GaussianPrior& prior, float scale, float* dmu, float* drho);
  // sample and kl_sum in one pass over the noise: w = mu + softplus(rho) * eps, returns kl_sum.
  double (*sample_kl)(const NoiseStream& s, int64_t begin, int64_t end, const float* mu, const float* rho,
                      const GaussianPrior& prior, float* w);
  // sample_grad and kl_grad in one pass: dmu (dw on entry, may alias it) = dw + the KL's dmu,
  // drho = dw * eps * sigmoid(rho) + the KL's drho, both of scale * kl_sum; w as sample_grad's.
  void (*sample_grad_kl)(const NoiseStream& s, int64_t begin, int64_t end, const float* dw, const float* mu,
                         const float* rho, const GaussianPrior& prior, float scale, float* dmu, float* drho, float* w);
  // Sum over n elements of the closed-form KL(N(mu, sigma^2) || N(prior.mean, prior.std^2)), in
  // double; no noise.
  double (*kl_analytic_sum)(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior);
  // dmu, drho of scale * kl_analytic_sum.
  void (*kl_analytic_grad)(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior, float scale,
                           float* dmu, float* drho);
};

// The fastest kernels this CPU runs (AVX-512, AVX2 or scalar), chosen once at first use.
// FUSEDBNN_ISA=scalar|avx2|avx512 in the environment forces one (tests use it).
const GaussianKernels& best_kernels();
// One lane with libm maths: bit-exact with tf.random.stateless_normal.
const GaussianKernels& exact_kernels();

// Whole-tensor entry points, split over the ParallelFor in fixed chunks.
void sample_gaussian(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                     float* w);
void sample_gaussian_grad(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* dw, const float* mu,
                          const float* rho, float* drho, float* w);
float gaussian_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                  const GaussianPrior& prior);
// sample_gaussian and gaussian_kl in one pass over the noise: w, and the KL at w returned.
float sample_gaussian_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                         const GaussianPrior& prior, float* w);
// The gradient of w and dkl * kl of sample_gaussian_kl in one pass: dmu = dw + dkl * the KL's dmu,
// drho = dw * eps * sigmoid(rho) + dkl * the KL's drho.
void sample_gaussian_grad_kl(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* dw, const float* mu,
                             const float* rho, const GaussianPrior& prior, float dkl, float* dmu, float* drho);
void gaussian_kl_grad(const ParallelFor& pf, const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                      const GaussianPrior& prior, float dkl, float* dmu, float* drho);
float gaussian_kl_analytic(const ParallelFor& pf, int64_t n, const float* mu, const float* rho,
                           const GaussianPrior& prior);
void gaussian_kl_analytic_grad(const ParallelFor& pf, int64_t n, const float* mu, const float* rho,
                               const GaussianPrior& prior, float dkl, float* dmu, float* drho);

}  // namespace fusedbnn
