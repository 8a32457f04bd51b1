// Bayesian linear layer on the CPU: y = x W^T + b with W = mu + softplus(rho) * eps sampled inside.
#pragma once

#include <cstdint>

#include "gaussian_prior.h"
#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

struct LinearParams {
  const float* x;  // [rows, in]
  int64_t rows, in, out;
  const float* w_mu;  // [out, in]
  const float* w_rho;
  NoiseStream w_stream;
  bool has_bias;
  const float* b_mu;  // [out], when has_bias
  const float* b_rho;
  NoiseStream b_stream;
  // The one-sample KL of the sample (docs/design.md, "The KL term"): with with_kl the forward also
  // writes *kl = sum(log q - log p) over W and b at the sample it draws, and the backward adds
  // *dkl times its gradient in the pass that regenerates the noise.
  bool with_kl = false;
  GaussianPrior w_prior{}, b_prior{};
};

// y [rows, out] (and *kl with with_kl). W is sampled tile by tile into cache-sized buffers: it never
// exists whole.
void linear_forward(const ParallelFor& pf, const LinearParams& p, float* y, float* kl = nullptr);

// The backward pass: the forward parameters, dy and where the gradients go.
struct LinearGradParams : LinearParams {
  const float* dy;  // [rows, out]
  float* dx;        // [rows, in]
  float* dw_mu;     // [out, in]
  float* dw_rho;
  float* db_mu;  // [out], unused without bias
  float* db_rho;
  // With with_kl, the gradient of the KL output: one float (host memory on the CPU, device memory on
  // a GPU), or null where there is none (the CPU skips the KL terms then).
  const float* dkl = nullptr;
};

// Gradients for dy, regenerating the noise tile by tile.
void linear_backward(const ParallelFor& pf, const LinearGradParams& p);

// The weight tiles of the linear kernels, sized for the cache: whole rows of W (output features)
// in the forward passes, columns (input features, a multiple of 64) in the estimators' backward
// passes (linear_backward tiles by rows, see linear.cc).
int64_t forward_rows_per_tile(const LinearParams& p);
int64_t backward_columns_per_tile(const LinearParams& p);

// y[r, :] += b for the bias sampled once under b_stream (all the layer ops share it); returns the
// bias's KL term when p.with_kl, else 0.
double add_sampled_bias(const ParallelFor& pf, const LinearParams& p, float* y);
// db_mu = column sums of dy, and db_rho from the regenerated bias noise (plus the KL's terms with dkl).
void sampled_bias_backward(const ParallelFor& pf, const LinearGradParams& p);

}  // namespace fusedbnn
