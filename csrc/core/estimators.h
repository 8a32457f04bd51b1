// Per-example estimators of the Bayesian linear layer (docs/design.md, "Estimators"):
//   flipout:                   y = x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b
//   local reparameterization:  y = x mu^T + sqrt(x^2 (sigma^2)^T) * eps_out + b
// with sigma = softplus(rho), eps the weight noise under w_seed, and the signs s_in [examples, in],
// s_out [examples, out] and the output noise eps_out [rows, out] derived from x_seed. None of them is
// stored: the backward passes regenerate them. x [rows, in] holds rows_per_example consecutive rows
// of each example (x [B, ..., in]: the positions between its first and last axes), which all take
// the example's signs: one pseudo-independent weight sample per example, as the convolutions have
// it. eps_out is per row: local reparameterization cannot correlate the rows of one example.
#pragma once

#include <cstdint>

#include "linear.h"
#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

// What each stream derived from x_seed draws: k in tf.random.experimental.stateless_fold_in(x_seed, k).
enum class EstimatorStream : int64_t { kSignsIn = 0, kSignsOut = 1, kOutputNoise = 2 };

// The first element of stateless_fold_in(x_seed, k)'s seed: r0 | r1 << 32, where r0, r1 are the
// first two Philox words of x_seed's own stream. Inline: the CUDA entry points derive the streams on
// the host from this header alone.
inline int64_t folded_seed(const NoiseStream& x_stream) {
  const Philox4 r = philox4x32_10(counter_add(x_stream.counter, 0), x_stream.key[0], x_stream.key[1]);
  return static_cast<int64_t>(static_cast<uint64_t>(r.v[1]) << 32 | r.v[0]);
}

// The stream of stateless_fold_in(x_seed, k): seed (folded_seed(x_stream), k).
inline NoiseStream derived_stream(const NoiseStream& x_stream, EstimatorStream k) {
  return stream_from_seed(folded_seed(x_stream), static_cast<int64_t>(k));
}

// The signs of Philox group g of a sign stream (elements [4g, 4g + 4)): the low bit of each word, as
// stateless_uniform(shape, seed, 0, 2, int32) * 2 - 1 draws them. Host and device.
FUSEDBNN_HD void sign_group(const NoiseStream& s, uint64_t g, float out[4]) {
  const Philox4 r = philox4x32_10(counter_add(s.counter, g), s.key[0], s.key[1]);
  for (int j = 0; j < 4; ++j) out[j] = (r.v[j] & 1u) ? 1.0f : -1.0f;
}

// Elements [begin, end) of the signs of stream s (sign_group's, in flat order).
void fill_signs(const NoiseStream& s, int64_t begin, int64_t end, float* signs);

// The two estimators of this header, for code that serves both (the op kernels).
enum class LinearEstimator { kFlipout, kLocalReparam };

// Elementwise kernels of local reparameterization over n elements, one table per instruction set:
// variance = softplus(rho)^2, and with drho = dvariance * 2 sigma * sigmoid(rho) alongside.
struct VarianceKernels {
  void (*variance)(int64_t n, const float* rho, float* variance);
  void (*variance_grad)(int64_t n, const float* rho, const float* dvariance, float* variance, float* drho);
};

// The kernels of the instruction set best_kernels() uses (FUSEDBNN_ISA narrows it).
const VarianceKernels& best_variance_kernels();

// y [rows, out]. The perturbation sigma * eps is sampled tile by tile, as linear_forward samples W.
// rows_per_example is positive and divides the rows.
void flipout_linear_forward(const ParallelFor& pf, const LinearParams& p, const NoiseStream& x_stream,
                            int64_t rows_per_example, float* y);
void flipout_linear_backward(const ParallelFor& pf, const LinearGradParams& g, const NoiseStream& x_stream,
                             int64_t rows_per_example);

// y and y_std = sqrt(x^2 (sigma^2)^T), both [rows, out]; no weight noise is drawn. The backward pass
// reads y_std (output-sized) instead of recomputing the product.
void local_reparam_linear_forward(const ParallelFor& pf, const LinearParams& p, const NoiseStream& x_stream, float* y,
                                  float* y_std);
void local_reparam_linear_backward(const ParallelFor& pf, const LinearGradParams& g, const NoiseStream& x_stream,
                                   const float* y_std);

}  // namespace fusedbnn
