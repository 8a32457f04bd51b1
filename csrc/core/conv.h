// Bayesian 2-D convolution on the CPU (1-D is the 2-D case with a unit height): the kernel
// W = mu + softplus(rho) * eps is sampled inside, then consumed by an im2col + GEMM convolution
// over chunks of whole images (depthwise: direct loops instead). eps is never stored.
//
// Layouts follow TensorFlow: x is NHWC or NCHW, the kernel is [kh, kw, in/groups, out] (row-major,
// so it is also a [kh*kw*in/groups, out] matrix whose columns [g*out/groups, (g+1)*out/groups) belong
// to group g), y has x's layout. NCHW chunks pass through NHWC scratch inside the workspace.
// Results are bit-identical whatever the ParallelFor's thread count.
#pragma once

#include <cstdint>
#include <string>

#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

enum class ConvPadding { kValid, kSame, kExplicit };

// Output size and leading padding of one spatial axis, with TensorFlow's arithmetic (SAME:
// out = ceil(in / stride), the odd padding element at the end). Returns an error message, empty
// when the axis is valid (the padded input must hold at least one dilated kernel window).
std::string conv_axis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, ConvPadding padding,
                      int64_t explicit_before, int64_t explicit_after, int64_t* out, int64_t* pad_before);

struct ConvParams {
  const float* x;
  int64_t batch, in_h, in_w, in_channels;
  int64_t out_h, out_w, out_channels;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t pad_top, pad_left;  // the trailing padding is implied by the output size
  int64_t groups;             // divides in_channels and out_channels
  bool channels_last;         // NHWC, else NCHW
  const float* w_mu;          // [kernel_h, kernel_w, in_channels / groups, out_channels]
  const float* w_rho;
  NoiseStream w_stream;
  bool has_bias;
  const float* b_mu;  // [out_channels], when has_bias
  const float* b_rho;
  NoiseStream b_stream;
};

int64_t conv_kernel_size(const ConvParams& p);  // elements of the kernel

// Scratch floats that conv_forward / conv_backward need (their `workspace` argument).
int64_t conv_forward_workspace(const ConvParams& p);
int64_t conv_backward_workspace(const ConvParams& p);

// y in x's layout: [batch, out_h, out_w, out_channels] or [batch, out_channels, out_h, out_w].
void conv_forward(const ParallelFor& pf, const ConvParams& p, float* workspace, float* y);

// The backward pass: the forward parameters, dy and where the gradients go.
struct ConvGradParams : ConvParams {
  const float* dy;  // y's shape
  float* dx;        // x's shape
  float* dw_mu;     // the kernel's shape
  float* dw_rho;
  float* db_mu;  // [out_channels], unused without bias
  float* db_rho;
};

// Gradients for dy; the noise is regenerated, never read back.
void conv_backward(const ParallelFor& pf, const ConvGradParams& p, float* workspace);

}  // namespace fusedbnn
