// Bayesian linear layer on NVIDIA GPUs: the CUDA counterpart of linear.h, on the same LinearParams
// (device pointers). Functions only enqueue work on `stream` and return the launch status.
//
// Plan: up to kFusedMaxRows rows, the product kernels sample each W tile into shared memory as they
// load it (W never exists in device memory; mu and rho are read once), and the backward samples
// each tile once for both dW's epilogue and dx. Above that, W is sampled
// once into scratch and the same tiled kernels read it. The contraction is split across blocks so
// that small batches fill the GPU; the partial sums are added in a fixed order (deterministic on a
// given GPU model).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "linear.h"

namespace fusedbnn {
namespace cuda {

constexpr int64_t kFusedMaxRows = 64;

// Device scratch each call needs, in bytes (depends on the sizes and the current device).
size_t linear_forward_scratch_bytes(const LinearParams& p);
size_t linear_backward_scratch_bytes(const LinearParams& p);

// y [rows, out] = x W^T + b; with p.with_kl also *kl (one device float), the one-sample KL of W and
// b, which a separate pass over the noise sums (the product kernels do not).
cudaError_t linear_forward(const LinearParams& p, void* scratch, float* y, cudaStream_t stream, float* kl = nullptr);

// The gradients of linear.h's LinearGradParams (device pointers); with p.dkl, the KL's terms are
// added in the epilogues that regenerate the noise.
cudaError_t linear_backward(const LinearGradParams& p, void* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
