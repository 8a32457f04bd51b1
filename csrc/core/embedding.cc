#include "embedding.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "embedding_norm.h"
#include "gaussian.h"

namespace fusedbnn {

namespace {

constexpr int64_t kCyclesPerElement = 40;
constexpr int64_t kPrefetchAhead = 2;  // rows

// |e|_p in double.
double row_norm(const float* e, int64_t dim, double p) {
  double terms = 0.0;
  for (int64_t c = 0; c < dim; ++c) terms += norm_term(e[c], p);
  return norm_from_terms(terms, p);
}

bool rescales(const EmbeddingParams& p) { return p.max_norm > 0.0f; }

// Asks for row `row` of the [*, dim] arrays `a` and `b` ahead of its use. The passes visit rows
// scattered over their arrays; without this every row's first load waits on memory (a fifth of the
// forward pass's time).
void prefetch_row(const float* a, const float* b, int64_t dim, int64_t row) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  for (int64_t c = 0; c < dim; c += kLineFloats) {
    __builtin_prefetch(a + row * dim + c);
    __builtin_prefetch(b + row * dim + c);
  }
}

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
      if (n + kPrefetchAhead < last) prefetch_row(p.w_mu, p.w_rho, p.dim, p.ids[n + kPrefetchAhead]);
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
  // (id, position) pairs in position order, then sorted by id with a least-significant-digit radix
  // sort, a byte a pass: stable, so positions stay ascending within an id. Several times faster
  // than a comparison sort through the ids (a tenth of the backward pass's time).
  struct IdPosition {
    int64_t id, position;
  };
  std::vector<IdPosition> pairs, scratch;
  pairs.reserve(p.count);
  for (int64_t n = 0; n < p.count; ++n) {
    if (p.ids[n] != p.padding_idx) pairs.push_back({p.ids[n], n});
  }
  scratch.resize(pairs.size());
  const uint64_t highest_id = static_cast<uint64_t>(p.rows - 1);
  for (int shift = 0; shift < 64 && (highest_id >> shift) != 0; shift += 8) {
    auto digit = [shift](const IdPosition& e) { return (static_cast<uint64_t>(e.id) >> shift) & 0xff; };
    std::array<size_t, 257> next{};
    for (const IdPosition& e : pairs) ++next[digit(e) + 1];
    for (int d = 0; d < 256; ++d) next[d + 1] += next[d];
    for (const IdPosition& e : pairs) scratch[next[digit(e)]++] = e;
    pairs.swap(scratch);
  }
  EmbeddingRows r;
  r.positions.resize(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    r.positions[i] = pairs[i].position;
    if (r.rows.empty() || r.rows.back() != pairs[i].id) {
      r.rows.push_back(pairs[i].id);
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
      if (u + kPrefetchAhead < last) prefetch_row(p.dy, p.dw_drho, p.dim, first_position(u + kPrefetchAhead));
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
