// The per-example estimators of the linear layer on NVIDIA GPUs: the CUDA counterparts of
// estimators.h, on the same LinearParams (device pointers) and with the same streams (x_stream is
// x_seed's; the streams derived from it are computed on the host). Functions only enqueue work on
// `stream` and return the launch status.
//
// Plan: every product runs through tiled_gemm.cuh, with the estimator's elementwise terms in its
// epilogue (the output signs, the output noise, the bias, the weight gradients' sampling terms) or in
// its operands (x^2, sigma^2, read as they are staged). What a product needs signed (x * s_in,
// dy * s_out) and flipout's perturbation sigma * eps are written to scratch first: W-sized scratch,
// as linear.cu uses above kFusedMaxRows rows. Local reparameterization draws no weight noise and
// needs no scratch in its forward pass.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "estimators.h"

namespace fusedbnn {
namespace cuda {

// Device scratch of one pass, in bytes (depends on the sizes only).
size_t estimator_forward_scratch_bytes(LinearEstimator estimator, const LinearParams& p);
size_t estimator_backward_scratch_bytes(LinearEstimator estimator, const LinearParams& p);

// y [rows, out]; rows_per_example as in estimators.h.
cudaError_t flipout_linear_forward(const LinearParams& p, const NoiseStream& x_stream, int64_t rows_per_example,
                                   void* scratch, float* y, cudaStream_t stream);
cudaError_t flipout_linear_backward(const LinearGradParams& g, const NoiseStream& x_stream, int64_t rows_per_example,
                                    void* scratch, cudaStream_t stream);

// y and y_std = sqrt(x^2 (sigma^2)^T), both [rows, out]; the backward pass reads y_std.
cudaError_t local_reparam_linear_forward(const LinearParams& p, const NoiseStream& x_stream, void* scratch, float* y,
                                         float* y_std, cudaStream_t stream);
cudaError_t local_reparam_linear_backward(const LinearGradParams& g, const NoiseStream& x_stream, const float* y_std,
                                          void* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
