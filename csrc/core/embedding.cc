#include "embedding.h"

#include <algorithm>
#include <cmath>

#include "embedding_norm.h"
#include "gaussian.h"

namespace fusedbnn {

namespace {

constexpr int64_t kCyclesPerElement = 40;

// |e|_p in double.
double row_norm(const float* e, int64_t dim, double p) {
  double terms = 0.0;
  for (int64_t c = 0; c < dim; ++c) terms += norm_term(e[c], p);
  return norm_from_terms(terms, p);
}

bool rescales(const EmbeddingParams& p) { return p.max_norm > 0.0f; }

void sample_row(const GaussianKernels& k, const EmbeddingParams& p, int64_t row, float* out) {
  k.sample(p.stream, row * p.dim, (row + 1) * p.dim, p.w_mu + row * p.dim, p.w_rho + row * p.dim, out);
}

// out = the sampled row and dw_drho = eps * sigmoid(rho): the sampling gradient for dw = 1, which
// writes w with the arithmetic of sample (bit-identical) in the same pass.
void sample_row_and_factor(const GaussianKernels& k, const EmbeddingParams& p, int64_t row, const float* ones,
                           float* out, float* dw_drho) {
  k.sample_grad(p.stream, row * p.dim, (row + 1) * p.dim, ones, p.w_mu + row * p.dim, p.w_rho + row * p.dim, dw_drho,
                out);
}

// de += d(e * s(e)) / de applied to g, s = max_norm / max(|e|_p, max_norm) (embedding_norm.h).
void accumulate_rescale_grad(const EmbeddingParams& p, const float* e, double norm, const float* g, float* de) {
  if (norm <= p.max_norm) {
    for (int64_t c = 0; c < p.dim; ++c) de[c] += g[c];
    return;
  }
  const double scale = p.max_norm / norm;
  double g_dot_e = 0.0;
  for (int64_t c = 0; c < p.dim; ++c) g_dot_e += static_cast<double>(g[c]) * e[c];
  const double pull = scale * g_dot_e / norm;
  for (int64_t c = 0; c < p.dim; ++c) de[c] += rescaled_grad(g[c], e[c], scale, pull, norm, p.norm_type);
}

}  // namespace

void embedding_forward(const ParallelFor& pf, const EmbeddingParams& p, float* out, float* dw_drho) {
  const GaussianKernels& k = best_kernels();
  pf(p.count, p.dim * kCyclesPerElement, [&](int64_t first, int64_t last) {
    const std::vector<float> ones(p.dim, 1.0f);
    for (int64_t n = first; n < last; ++n) {
      float* row = out + n * p.dim;
      float* factor = dw_drho + n * p.dim;
      const int64_t id = p.ids[n];
      if (id == p.padding_idx) {
        std::fill(row, row + p.dim, 0.0f);
        std::fill(factor, factor + p.dim, 0.0f);
        continue;
      }
      sample_row_and_factor(k, p, id, ones.data(), row, factor);
      if (!rescales(p)) continue;
      const double norm = row_norm(row, p.dim, p.norm_type);
      if (norm <= p.max_norm) continue;
      const float s = static_cast<float>(p.max_norm / norm);
      for (int64_t c = 0; c < p.dim; ++c) row[c] *= s;
    }
  });
}

EmbeddingRows embedding_rows(const EmbeddingParams& p) {
  EmbeddingRows r;
  r.positions.reserve(p.count);
  for (int64_t n = 0; n < p.count; ++n) {
    if (p.ids[n] != p.padding_idx) r.positions.push_back(n);
  }
  std::stable_sort(r.positions.begin(), r.positions.end(), [&](int64_t a, int64_t b) { return p.ids[a] < p.ids[b]; });
  for (size_t i = 0; i < r.positions.size(); ++i) {
    const int64_t id = p.ids[r.positions[i]];
    if (r.rows.empty() || r.rows.back() != id) {
      r.rows.push_back(id);
      r.starts.push_back(static_cast<int64_t>(i));
    }
  }
  r.starts.push_back(static_cast<int64_t>(r.positions.size()));
  return r;
}

void embedding_backward(const ParallelFor& pf, const EmbeddingGradParams& p, const EmbeddingRows& rows) {
  const GaussianKernels& k = best_kernels();
  const int64_t unique = static_cast<int64_t>(rows.rows.size());
  const int64_t mean_repeats = unique == 0 ? 1 : ceil_div(static_cast<int64_t>(rows.positions.size()), unique);
  const int64_t cycles_per_element = (rescales(p) ? kCyclesPerElement : 1) + mean_repeats;
  // The rows of dy and dw_drho at u's first position: dw_drho is the same at all of u's positions.
  auto first_position = [&](int64_t u) { return rows.positions[rows.starts[u]]; };
  pf(unique, p.dim * cycles_per_element, [&](int64_t first, int64_t last) {
    std::vector<float> sampled(rescales(p) ? p.dim : 0);
    for (int64_t u = first; u < last; ++u) {
      float* dw = p.dw_mu + u * p.dim;
      const int64_t* position = rows.positions.data() + rows.starts[u];
      const int64_t* end = rows.positions.data() + rows.starts[u + 1];
      if (rescales(p)) {
        std::fill(dw, dw + p.dim, 0.0f);
        sample_row(k, p, rows.rows[u], sampled.data());
        const double norm = row_norm(sampled.data(), p.dim, p.norm_type);
        for (; position < end; ++position)
          accumulate_rescale_grad(p, sampled.data(), norm, p.dy + *position * p.dim, dw);
      } else {
        std::copy(p.dy + *position * p.dim, p.dy + (*position + 1) * p.dim, dw);
        for (++position; position < end; ++position) {
          const float* g = p.dy + *position * p.dim;
          for (int64_t c = 0; c < p.dim; ++c) dw[c] += g[c];
        }
      }
      // dmu = dW; drho = dW * eps * sigmoid(rho).
      const float* factor = p.dw_drho + first_position(u) * p.dim;
      float* drho = p.dw_rho + u * p.dim;
      for (int64_t c = 0; c < p.dim; ++c) drho[c] = dw[c] * factor[c];
    }
  });
}

}  // namespace fusedbnn
