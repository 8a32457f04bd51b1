// Bayesian 2-D convolution on NVIDIA GPUs: the CUDA counterpart of conv.h, on the same ConvParams
// (device pointers; 1-D is the unit-height case). Functions only enqueue work on `stream` and
// return the launch status; scratch comes from the caller.
//
// Plan: the kernel (and bias) is sampled once into scratch by the fused sampling kernel, then one
// tiled implicit-GEMM kernel runs each product, gathering its operands from x, dy and the kernel
// as it stages them in shared memory (no im2col buffer): y = patches(x) W, dx = patches(dy) W^T
// (the gather form: each dx element is written once, no atomics), dW = patches(x)^T dy with the
// contraction over batch and pixels split across blocks and the partials added in a fixed order.
// dW and db then go through the fused sampling gradient, which regenerates eps. NCHW tensors pass
// through NHWC scratch. Results are deterministic on a given GPU model (the splits depend on the
// sizes and the multiprocessor count only).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "conv.h"

namespace fusedbnn {
namespace cuda {

// Why these sizes are beyond the CUDA kernels (they index within an image, a kernel and the rows
// of x and y with 32-bit integers), or nullptr when they are not.
const char* conv_size_error(const ConvParams& p);

// Device scratch each call needs, in bytes (depends on the sizes and the current device).
size_t conv_forward_scratch_bytes(const ConvParams& p);
size_t conv_backward_scratch_bytes(const ConvParams& p);

// y in x's layout: [batch, out_h, out_w, out_channels] or [batch, out_channels, out_h, out_w].
cudaError_t conv_forward(const ConvParams& p, void* scratch, float* y, cudaStream_t stream);

// The gradients of conv.h's ConvGradParams (device pointers).
cudaError_t conv_backward(const ConvGradParams& p, void* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
