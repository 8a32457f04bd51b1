// Bayesian embedding lookup on the CPU: only the looked-up rows of W = mu + softplus(rho) * eps are
// sampled. Element (r, c) uses noise element r * dim + c of the full-table draw, so the result equals
// a gather from a fully sampled table.
//
// Semantics (those of fusedbnn.reference.embedding): output row n is W[ids[n]], zero where
// ids[n] == padding_idx; with max_norm > 0 each row e is rescaled by max_norm / max(|e|_p, max_norm),
// p = norm_type, so rows with a norm above max_norm come out with norm max_norm and the gradient
// flows through the rescale.
//
// The forward pass also writes dw_drho = eps * sigmoid(rho), the derivative of each looked-up
// sampled weight for its rho (before any rescale), one output-sized tensor that the backward pass
// multiplies by instead of regenerating the noise (docs/design.md, "What a backward op may keep").
#pragma once

#include <cstdint>
#include <vector>

#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

struct EmbeddingParams {
  const int64_t* ids;  // [count], every id in [0, rows)
  int64_t count;
  int64_t rows, dim;
  const float* w_mu;  // [rows, dim]
  const float* w_rho;
  NoiseStream stream;
  int64_t padding_idx;  // < 0: none
  float max_norm;       // <= 0: no rescaling
  float norm_type;      // p > 0 of the p-norm
};

// out and dw_drho [count, dim]; both rows are zero at padding_idx.
void embedding_forward(const ParallelFor& pf, const EmbeddingParams& p, float* out, float* dw_drho);

// The distinct looked-up rows other than padding_idx, ascending, and the positions of each.
struct EmbeddingRows {
  std::vector<int64_t> rows;       // [unique]
  std::vector<int64_t> positions;  // positions into ids, grouped by row in row order, ascending within
  std::vector<int64_t> starts;     // [unique + 1]: row u owns positions[starts[u] : starts[u + 1]]
};
EmbeddingRows embedding_rows(const EmbeddingParams& p);

// The backward pass: the forward parameters, dy and where the gradient rows go.
struct EmbeddingGradParams : EmbeddingParams {
  const float* dy;       // [count, dim]
  const float* dw_drho;  // [count, dim], as the forward pass wrote it
  float* dw_mu;          // [unique, dim]: row u for rows.rows[u]
  float* dw_rho;
};

// Gradients for dy as rows of the table (repeated ids summed): dw_rho = dw_mu * dw_drho. Without
// max_norm no noise is drawn; with it the looked-up rows are sampled again for their norms.
void embedding_backward(const ParallelFor& pf, const EmbeddingGradParams& p, const EmbeddingRows& rows);

}  // namespace fusedbnn
