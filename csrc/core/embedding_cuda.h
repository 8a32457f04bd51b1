// Bayesian embedding lookup on NVIDIA GPUs: out[n] = W[ids[n]] with W = mu + softplus(rho) * eps,
// only the looked-up rows sampled, with the semantics of the CPU kernel (embedding.h): zero rows at
// padding_idx, and with max_norm > 0 each output row e scaled by max_norm / max(|e|_p, max_norm),
// p = norm_type, its gradient included. Device pointers; functions only enqueue work on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "noise.h"

namespace fusedbnn {
namespace cuda {

struct EmbeddingParams {
  const void* ids;  // [count], int32 or int64
  bool ids_int64;
  int64_t count;
  int64_t num_embeddings, dim;
  const float* w_mu;  // [num_embeddings, dim]
  const float* w_rho;
  NoiseStream w_stream;
  int64_t padding_idx;  // rows at this id are zero and get no gradient; -1 for none
  float max_norm;       // <= 0: no rescaling
  float norm_type;      // p > 0 of the p-norm
};

// out and dw_drho [count, dim]: dw_drho = eps * sigmoid(rho) of each looked-up element (before the
// rescale), which the backward pass multiplies by instead of regenerating the noise. An id outside
// [0, num_embeddings) reads nothing, gets zero rows, and sets *bad_id (a device int, when not
// null) to 1; padding_idx gets zero rows.
cudaError_t embedding_forward(const EmbeddingParams& p, float* out, float* dw_drho, int* bad_id, cudaStream_t stream);

// The rows the backward pass writes, as the CPU's embedding_rows makes them (on the host, then
// copied): the distinct looked-up ids other than padding_idx and the positions of each. Device
// pointers. Entries that name no valid row or position (out of range, padding_idx, or starts not
// ascending) read nothing and contribute nothing.
struct EmbeddingGradRows {
  const int64_t* rows;  // [unique]
  int64_t unique;
  const int64_t* positions;  // [positions_size]: indices into ids (and rows of dy), grouped by row
  int64_t positions_size;
  const int64_t* starts;  // [unique + 1]: row u owns positions[starts[u] : starts[u + 1]]
  int64_t max_positions;  // the most positions of any row: sizes the blocks (speed only, any value is correct)
};

// The backward pass: the forward parameters (ids not read), dy [count, dim], the forward pass's
// dw_drho [count, dim] and the gradient rows.
struct EmbeddingGradParams : EmbeddingParams {
  const float* dy;
  const float* dw_drho;
  float* dw_mu;  // [unique, dim]
  float* dw_rho;
};

// dw_mu and dw_rho [unique, dim]: row u is the gradient of W[rows[u]], the rows of dy at its
// positions summed (deterministic, no atomics: in the order listed, or when rows repeat many times
// in up to 8 interleaved slices added in a fixed order), through the max_norm rescale (which samples
// the row again for its norm), and dw_rho = dw_mu * dw_drho of the row's first position. p.ids is
// not read. A row's cost grows with its number of positions.
cudaError_t embedding_backward(const EmbeddingGradParams& p, const EmbeddingGradRows& rows, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
