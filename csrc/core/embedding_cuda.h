// Bayesian embedding lookup on NVIDIA GPUs: out[n] = W[ids[n]] with W = mu + softplus(rho) * eps,
// only the looked-up rows sampled. Device pointers; functions only enqueue work on `stream`.
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
};

// out [count, dim]. An id outside [0, num_embeddings) reads nothing, gets a zero row, and sets
// *bad_id (a device int, when not null) to 1.
cudaError_t embedding_forward(const EmbeddingParams& p, float* out, int* bad_id, cudaStream_t stream);

// dw_mu = sum of the rows of dy scattered to their ids (float atomics: the order of additions to a
// row looked up several times varies between runs), dw_rho = dw_mu * eps * sigmoid(rho) on those
// rows, zero elsewhere. Out-of-range ids are skipped.
cudaError_t embedding_backward(const EmbeddingParams& p, const float* dy, float* dw_mu, float* dw_rho,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
