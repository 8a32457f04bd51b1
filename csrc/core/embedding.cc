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

void embedding_forward(const ParallelFor& pf, const EmbeddingParams& p, float* out) {
  const GaussianKernels& k = best_kernels();
  pf(p.count, p.dim * kCyclesPerElement, [&](int64_t first, int64_t last) {
    for (int64_t n = first; n < last; ++n) {
      float* row = out + n * p.dim;
      const int64_t id = p.ids[n];
      if (id == p.padding_idx) {
        std::fill(row, row + p.dim, 0.0f);
        continue;
      }
      sample_row(k, p, id, row);
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
  pf(unique, p.dim * (kCyclesPerElement + mean_repeats), [&](int64_t first, int64_t last) {
    std::vector<float> sampled(rescales(p) ? p.dim : 0);
    for (int64_t u = first; u < last; ++u) {
      const int64_t id = rows.rows[u];
      float* dw = p.dw_mu + u * p.dim;
      std::fill(dw, dw + p.dim, 0.0f);
      double norm = 0.0;
      if (rescales(p)) {
        sample_row(k, p, id, sampled.data());
        norm = row_norm(sampled.data(), p.dim, p.norm_type);
      }
      for (int64_t i = rows.starts[u]; i < rows.starts[u + 1]; ++i) {
        const float* g = p.dy + rows.positions[i] * p.dim;
        if (rescales(p)) {
          accumulate_rescale_grad(p, sampled.data(), norm, g, dw);
        } else {
          for (int64_t c = 0; c < p.dim; ++c) dw[c] += g[c];
        }
      }
      // dmu = dW; drho = dW * eps * sigmoid(rho), eps regenerated for this row.
      k.sample_grad(p.stream, id * p.dim, (id + 1) * p.dim, dw, p.w_mu + id * p.dim, p.w_rho + id * p.dim,
                    p.dw_rho + u * p.dim, nullptr);
    }
  });
}

}  // namespace fusedbnn
