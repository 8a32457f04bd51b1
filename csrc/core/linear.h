// Bayesian linear layer on the CPU: y = x W^T + b with W = mu + softplus(rho) * eps sampled inside.
#pragma once

#include <cstdint>

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
};

// y [rows, out]. W is sampled tile by tile into cache-sized buffers: it never exists whole.
void linear_forward(const ParallelFor& pf, const LinearParams& p, float* y);

// The backward pass: the forward parameters, dy and where the gradients go.
struct LinearGradParams : LinearParams {
  const float* dy;  // [rows, out]
  float* dx;        // [rows, in]
  float* dw_mu;     // [out, in]
  float* dw_rho;
  float* db_mu;  // [out], unused without bias
  float* db_rho;
};

// Gradients for dy, regenerating the noise tile by tile.
void linear_backward(const ParallelFor& pf, const LinearGradParams& p);

// The weight tiles of the linear kernels, sized for the cache: whole rows of W (output features)
// in the forward passes, columns (input features, a multiple of 64) in the estimators' backward
// passes (linear_backward tiles by rows, see linear.cc).
int64_t forward_rows_per_tile(const LinearParams& p);
int64_t backward_columns_per_tile(const LinearParams& p);

// y[r, :] += b for the bias sampled once under b_stream (all the layer ops share it).
void add_sampled_bias(const ParallelFor& pf, const LinearParams& p, float* y);
// db_mu = column sums of dy, and db_rho from the regenerated bias noise.
void sampled_bias_backward(const ParallelFor& pf, const LinearGradParams& p);

}  // namespace fusedbnn
