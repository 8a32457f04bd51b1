// Gaussian sampling, its gradient, the one-sample KL estimate and the closed-form KL on NVIDIA GPUs: the CUDA
// counterparts of gaussian.h. Pointers are device pointers; every function only enqueues work on
// `stream` (no synchronisation) and returns the launch status. eps is regenerated, never stored.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "gaussian_prior.h"
#include "noise.h"

namespace fusedbnn {
namespace cuda {

// out[i] = eps(s, i) for i < n.
cudaError_t fill_normal(const NoiseStream& s, int64_t n, float* out, cudaStream_t stream);

// w = mu + softplus(rho) * eps.
cudaError_t sample_gaussian(const NoiseStream& s, int64_t n, const float* mu, const float* rho, float* w,
                            cudaStream_t stream);

// drho = dw * eps * sigmoid(rho); when w is not null also w = mu + softplus(rho) * eps (then mu is
// read, else it may be null).
cudaError_t sample_gaussian_grad(const NoiseStream& s, int64_t n, const float* dw, const float* mu, const float* rho,
                                 float* drho, float* w, cudaStream_t stream);

// Bytes of device scratch gaussian_kl and gaussian_kl_analytic need (independent of n).
size_t gaussian_kl_scratch_bytes();

// *kl (one device float) = sum of log N(w; mu, sigma) - log N(w; prior.mean, prior.std), summed in
// double in an order fixed by n alone (deterministic). prior.mean is a device pointer.
cudaError_t gaussian_kl(const NoiseStream& s, int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                        void* scratch, float* kl, cudaStream_t stream);

// w = mu + softplus(rho) * eps and *kl as gaussian_kl's (a second pass over the noise), with
// gaussian_kl_scratch_bytes() of scratch.
cudaError_t sample_gaussian_kl(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                               const GaussianPrior& prior, void* scratch, float* w, float* kl, cudaStream_t stream);

// dmu = dw + the KL's dmu, drho = dw * eps * sigmoid(rho) + the KL's drho, the KL's terms scaled by
// the device scalar *dkl: the gradient of sample_gaussian_kl in one pass.
cudaError_t sample_gaussian_grad_kl(const NoiseStream& s, int64_t n, const float* dw, const float* mu, const float* rho,
                                    const GaussianPrior& prior, const float* dkl, float* dmu, float* drho,
                                    cudaStream_t stream);

// dmu, drho of (*dkl) * kl, dkl a device scalar.
cudaError_t gaussian_kl_grad(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                             const GaussianPrior& prior, const float* dkl, float* dmu, float* drho,
                             cudaStream_t stream);

// *kl = sum of the closed-form KL(N(mu, sigma^2) || N(prior.mean, prior.std^2)), no noise, summed
// as gaussian_kl sums.
cudaError_t gaussian_kl_analytic(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                                 void* scratch, float* kl, cudaStream_t stream);

// dmu, drho of (*dkl) * kl_analytic, dkl a device scalar.
cudaError_t gaussian_kl_analytic_grad(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                                      const float* dkl, float* dmu, float* drho, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
