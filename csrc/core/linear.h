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

// Gradients for dy [rows, out]: dx [rows, in], dw_mu and dw_rho [out, in], db_mu and db_rho [out]
// (bias outputs unused without bias), regenerating the noise tile by tile.
void linear_backward(const ParallelFor& pf, const LinearParams& p, const float* dy, float* dx, float* dw_mu,
                     float* dw_rho, float* db_mu, float* db_rho);

}  // namespace fusedbnn
