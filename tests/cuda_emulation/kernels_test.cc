// Every CUDA kernel of csrc/core against double-precision loops over the host noise (eps_at), run
// on the CPU through cuda_runtime.h here. Outputs start as NaN, so unwritten elements fail; every
// case runs with 16-byte-aligned and with misaligned pointers (the kernels' vector and scalar
// paths), sizes off every tile, batch 0 and 1, empty sizes, repeated and out-of-range ids.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/embedding_cuda.h"
#include "core/gaussian_cuda.h"
#include "core/linear_cuda.h"

namespace fusedbnn {
namespace {

std::mt19937 generator(1);
int failures = 0;

// n normal floats from one allocation; `data() + 1` gives a misaligned view of n of them.
std::vector<float> random_floats(int64_t n, float mean, float sd) {
  std::normal_distribution<float> normal(mean, sd);
  std::vector<float> v(n + 8);
  for (float& x : v) x = normal(generator);
  return v;
}

std::vector<float> poisoned(int64_t n) { return std::vector<float>(n + 8, NAN); }

double softplus(float x) { return stable_softplus(x); }
double sigmoid_d(float x) { return 1.0 / (1.0 + std::exp(-static_cast<double>(x))); }

// Relative error in norm below bound; min_scale floors the norm it is relative to (for results that
// are zero up to rounding).
void expect_close(const std::string& what, const float* actual, const std::vector<double>& expected,
                  double bound = 1e-5, double min_scale = 1e-30) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!std::isfinite(actual[i])) {
      diff = INFINITY;
      break;
    }
    diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  if (std::sqrt(diff) <= bound * std::max(std::sqrt(norm), min_scale)) return;
  ++failures;
  std::printf("FAIL %s: relative error %.3g over %zu elements\n", what.c_str(), std::sqrt(diff / std::max(norm, 1e-60)),
              expected.size());
}

void gaussian_case(int64_t n, int offset) {
  const std::string name = "gaussian n=" + std::to_string(n) + " offset=" + std::to_string(offset);
  const NoiseStream s = stream_from_seed(n, -7);
  const auto mu_v = random_floats(n, 0.0f, 0.5f), rho_v = random_floats(n, -3.0f, 1.0f), dw_v = random_floats(n, 0, 1);
  const float *mu = mu_v.data() + offset, *rho = rho_v.data() + offset, *dw = dw_v.data() + offset;
  const float mu_prior = 0.1f, std_prior = 0.3f, dkl = 1.7f;
  std::vector<double> eps(n), w(n), drho(n), kl_dmu(n), kl_drho(n);
  double kl = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    eps[i] = eps_at(s, i);
    const double sigma = softplus(rho[i]);
    w[i] = mu[i] + sigma * eps[i];
    drho[i] = dw[i] * eps[i] * sigmoid_d(rho[i]);
    const double z = (w[i] - mu_prior) / std_prior;
    kl += std::log(std_prior) - std::log(sigma) + 0.5 * (z * z - eps[i] * eps[i]);
    kl_dmu[i] = dkl * (w[i] - mu_prior) / (std_prior * std_prior);
    kl_drho[i] = (kl_dmu[i] * eps[i] - dkl / sigma) * sigmoid_d(rho[i]);
  }
  auto out = poisoned(n), out2 = poisoned(n), out3 = poisoned(n);
  cuda::fill_normal(s, n, out.data() + offset, nullptr);
  expect_close(name + " normal", out.data() + offset, eps, 1e-6);
  cuda::sample_gaussian(s, n, mu, rho, out.data() + offset, nullptr);
  expect_close(name + " sample", out.data() + offset, w);
  cuda::sample_gaussian_grad(s, n, dw, mu, rho, out2.data() + offset, out3.data() + offset, nullptr);
  expect_close(name + " grad drho", out2.data() + offset, drho);
  expect_close(name + " grad w", out3.data() + offset, w);
  auto alone = poisoned(n);
  cuda::sample_gaussian_grad(s, n, dw, nullptr, rho, alone.data() + offset, nullptr, nullptr);
  expect_close(name + " grad drho alone", alone.data() + offset, drho);

  std::vector<char> scratch(cuda::gaussian_kl_scratch_bytes());
  float kl_value = NAN;
  cuda::gaussian_kl(s, n, mu, rho, mu_prior, std_prior, scratch.data(), &kl_value, nullptr);
  expect_close(name + " kl", &kl_value, {kl});
  auto dmu = poisoned(n), dr = poisoned(n);
  cuda::gaussian_kl_grad(s, n, mu, rho, mu_prior, std_prior, &dkl, dmu.data(), dr.data(), nullptr);
  expect_close(name + " kl dmu", dmu.data(), kl_dmu);
  expect_close(name + " kl drho", dr.data(), kl_drho);
}

void linear_case(int64_t rows, int64_t in, int64_t out, bool bias, int offset) {
  const std::string name = "linear " + std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out) +
                           (bias ? " bias" : "") + " offset=" + std::to_string(offset);
  const auto x = random_floats(rows * in, 0, 1), mu = random_floats(out * in, 0, 0.5f),
             rho = random_floats(out * in, -3, 1), b_mu = random_floats(out, 0, 0.5f),
             b_rho = random_floats(out, -3, 1), dy_v = random_floats(rows * out, 0, 1);
  const LinearParams p{x.data() + offset, rows, in, out, mu.data() + offset, rho.data() + offset,
                       stream_from_seed(rows, in), bias, b_mu.data(), b_rho.data(), stream_from_seed(out, 3)};
  const float* dy = dy_v.data() + offset;

  std::vector<double> w(out * in), eps(out * in), b(out, 0.0), b_eps(out, 0.0);
  for (int64_t i = 0; i < out * in; ++i) {
    eps[i] = eps_at(p.w_stream, i);
    w[i] = p.w_mu[i] + softplus(p.w_rho[i]) * eps[i];
  }
  for (int64_t o = 0; bias && o < out; ++o) {
    b_eps[o] = eps_at(p.b_stream, o);
    b[o] = b_mu[o] + softplus(b_rho[o]) * b_eps[o];
  }
  std::vector<double> y(rows * out), dx(rows * in, 0.0), dw_mu(out * in), dw_rho(out * in), db_mu(out), db_rho(out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = b[o];
      for (int64_t k = 0; k < in; ++k) sum += p.x[r * in + k] * w[o * in + k];
      y[r * out + o] = sum;
      for (int64_t k = 0; k < in; ++k) dx[r * in + k] += dy[r * out + o] * w[o * in + k];
    }
  }
  for (int64_t o = 0; o < out; ++o) {
    double column = 0.0;
    for (int64_t r = 0; r < rows; ++r) column += dy[r * out + o];
    db_mu[o] = column;
    db_rho[o] = column * b_eps[o] * sigmoid_d(b_rho[o]);
    for (int64_t k = 0; k < in; ++k) {
      double sum = 0.0;
      for (int64_t r = 0; r < rows; ++r) sum += dy[r * out + o] * p.x[r * in + k];
      dw_mu[o * in + k] = sum;
      dw_rho[o * in + k] = sum * eps[o * in + k] * sigmoid_d(p.w_rho[o * in + k]);
    }
  }

  std::vector<char> forward_scratch(cuda::linear_forward_scratch_bytes(p));
  auto y_out = poisoned(rows * out);
  cuda::linear_forward(p, forward_scratch.data(), y_out.data(), nullptr);
  expect_close(name + " y", y_out.data(), y);
  std::vector<char> backward_scratch(cuda::linear_backward_scratch_bytes(p));
  auto dx_out = poisoned(rows * in), dmu_out = poisoned(out * in), drho_out = poisoned(out * in);
  auto dbmu_out = poisoned(out), dbrho_out = poisoned(out);
  cuda::linear_backward(p, dy, backward_scratch.data(), dx_out.data(), dmu_out.data(), drho_out.data(),
                        dbmu_out.data(), dbrho_out.data(), nullptr);
  expect_close(name + " dx", dx_out.data(), dx);
  expect_close(name + " dw_mu", dmu_out.data(), dw_mu);
  expect_close(name + " dw_rho", drho_out.data(), dw_rho);
  if (bias) {
    expect_close(name + " db_mu", dbmu_out.data(), db_mu);
    expect_close(name + " db_rho", dbrho_out.data(), db_rho);
  }
}

// How an embedding case sets max_norm: off, between the norms of the table's rows (so that some
// looked-up rows are rescaled and some not), below every row's norm, or above every row's norm.
enum class MaxNorm { kOff, kSplit, kAllAbove, kAllBelow };

// The gradient rows of ids as the CPU's embedding_rows lists them: valid ids other than padding_idx,
// ascending, with their positions in order.
struct GradRows {
  std::vector<int64_t> rows, positions, starts;
  cuda::EmbeddingGradRows device_view() const {
    int64_t most = 0;
    for (size_t u = 0; u < rows.size(); ++u) most = std::max(most, starts[u + 1] - starts[u]);
    return {rows.data(), static_cast<int64_t>(rows.size()), positions.data(), static_cast<int64_t>(positions.size()),
            starts.data(), most};
  }
};

GradRows grad_rows(const std::vector<int64_t>& ids, int64_t num, int64_t padding_idx) {
  GradRows r;
  for (int64_t id = 0; id < num; ++id) {
    const size_t first = r.positions.size();
    for (size_t n = 0; n < ids.size(); ++n) {
      if (ids[n] == id && id != padding_idx) r.positions.push_back(static_cast<int64_t>(n));
    }
    if (r.positions.size() == first) continue;
    r.rows.push_back(id);
    r.starts.push_back(static_cast<int64_t>(first));
  }
  r.starts.push_back(static_cast<int64_t>(r.positions.size()));
  return r;
}

double p_norm(const std::vector<double>& e, double p) {
  double terms = 0.0;
  for (double x : e) terms += std::pow(std::fabs(x), p);
  return std::pow(terms, 1.0 / p);
}

void embedding_case(int64_t num, int64_t dim, int64_t count, int64_t highest, int64_t padding_idx, MaxNorm mode,
                    float norm_type, bool int64_ids, int offset) {
  const std::string name = "embedding " + std::to_string(num) + "x" + std::to_string(dim) + " ids=" +
                           std::to_string(count) + " padding=" + std::to_string(padding_idx) + " max_norm mode " +
                           std::to_string(static_cast<int>(mode)) + " p=" + std::to_string(norm_type) +
                           (int64_ids ? " int64" : " int32") + " offset=" + std::to_string(offset);
  auto mu_v = random_floats(num * dim, 0, 0.5f);
  const auto rho_v = random_floats(num * dim, -3, 1), dy_v = random_floats(count * dim, 0, 1);
  // Rows of very different norms, so that a max_norm between them splits the table.
  for (int64_t r = 0; r < num; ++r) {
    for (int64_t c = 0; c < dim; ++c) mu_v[offset + r * dim + c] *= r % 2 ? 2.0f : 0.25f;
  }
  std::uniform_int_distribution<int64_t> draw(0, highest - 1);
  std::vector<int64_t> ids64(count);
  for (int64_t& id : ids64) id = draw(generator);
  if (count > 3) ids64[1] = -1, ids64[2] = num;  // out of range on both sides
  const std::vector<int32_t> ids32(ids64.begin(), ids64.end());
  cuda::EmbeddingParams p{int64_ids ? static_cast<const void*>(ids64.data()) : ids32.data(), int64_ids, count,
                          num, dim, mu_v.data() + offset, rho_v.data() + offset, stream_from_seed(num, dim),
                          padding_idx, 0.0f, norm_type};
  const float* dy = dy_v.data() + offset;

  // The sampled table, its eps, and its row norms, in double.
  std::vector<std::vector<double>> w(num, std::vector<double>(dim)), eps = w;
  std::vector<double> norms(num);
  for (int64_t r = 0; r < num; ++r) {
    for (int64_t c = 0; c < dim; ++c) {
      const int64_t f = r * dim + c;
      eps[r][c] = eps_at(p.w_stream, f);
      w[r][c] = p.w_mu[f] + softplus(p.w_rho[f]) * eps[r][c];
    }
    norms[r] = p_norm(w[r], norm_type);
  }
  std::vector<double> sorted = norms;
  std::sort(sorted.begin(), sorted.end());
  if (num > 0 && dim > 0) {
    if (mode == MaxNorm::kSplit) {
      const size_t k = std::max<size_t>(1, sorted.size() / 2);
      p.max_norm = static_cast<float>(k < sorted.size() ? 0.5 * (sorted[k - 1] + sorted[k]) : 0.5 * sorted[0]);
    }
    if (mode == MaxNorm::kAllAbove) p.max_norm = static_cast<float>(0.5 * sorted.front());
    if (mode == MaxNorm::kAllBelow) p.max_norm = static_cast<float>(2.0 * sorted.back());
  }
  const auto rescaled = [&](int64_t r) { return p.max_norm > 0.0f && norms[r] > p.max_norm; };

  std::vector<double> out(count * dim, 0.0);
  bool any_bad = false;
  for (int64_t n = 0; n < count; ++n) {
    const int64_t id = ids64[n];
    any_bad |= id < 0 || id >= num;
    if (id < 0 || id >= num || id == padding_idx) continue;
    const double scale = rescaled(id) ? p.max_norm / norms[id] : 1.0;
    for (int64_t c = 0; c < dim; ++c) out[n * dim + c] = w[id][c] * scale;
  }
  const GradRows rows = grad_rows(ids64, num, padding_idx);
  const int64_t unique = static_cast<int64_t>(rows.rows.size());
  std::vector<double> dmu(unique * dim, 0.0), drho(unique * dim);
  // The gradient through a rescale can be zero up to rounding (dim 1: a rescaled row is constant).
  double dy_rows_norm = 0.0;
  for (int64_t n : rows.positions) {
    for (int64_t c = 0; c < dim; ++c) dy_rows_norm += dy[n * dim + c] * dy[n * dim + c];
  }
  const double grad_floor = 1e-6 * std::sqrt(dy_rows_norm);
  for (int64_t u = 0; u < unique; ++u) {
    const int64_t id = rows.rows[u];
    const double norm = norms[id], p_type = norm_type;
    for (int64_t i = rows.starts[u]; i < rows.starts[u + 1]; ++i) {
      const float* g = dy + rows.positions[i] * dim;
      if (!rescaled(id)) {
        for (int64_t c = 0; c < dim; ++c) dmu[u * dim + c] += g[c];
        continue;
      }
      // d(e * max_norm / |e|_p) / de applied to g.
      const double scale = p.max_norm / norm;
      double g_dot_e = 0.0;
      for (int64_t c = 0; c < dim; ++c) g_dot_e += g[c] * w[id][c];
      for (int64_t c = 0; c < dim; ++c) {
        const double e = w[id][c];
        const double dn = std::copysign(std::pow(std::fabs(e) / norm, p_type - 1.0), e);
        dmu[u * dim + c] += scale * g[c] - scale * g_dot_e / norm * dn;
      }
    }
    for (int64_t c = 0; c < dim; ++c) {
      drho[u * dim + c] = dmu[u * dim + c] * eps[id][c] * sigmoid_d(p.w_rho[id * dim + c]);
    }
  }

  auto out_v = poisoned(count * dim);
  int bad_id = 0;
  cuda::embedding_forward(p, out_v.data() + offset, &bad_id, nullptr);
  expect_close(name + " out", out_v.data() + offset, out);
  if (bad_id != static_cast<int>(any_bad)) {
    ++failures;
    std::printf("FAIL %s: bad_id flag %d\n", name.c_str(), bad_id);
  }
  auto dmu_out = poisoned(unique * dim), drho_out = poisoned(unique * dim);
  cuda::embedding_backward(p, rows.device_view(), dy, dmu_out.data() + offset, drho_out.data() + offset, nullptr);
  expect_close(name + " dw_mu", dmu_out.data() + offset, dmu, 1e-5, grad_floor);
  expect_close(name + " dw_rho", drho_out.data() + offset, drho, 1e-5, grad_floor);
}

void embedding_cases() {
  // (num, dim, count, highest id drawn, padding_idx): one element; odd dims; repeated rows (small
  // id ranges); a row of more runs than one block has threads (dim 1100); no ids; dim 1; rows
  // repeated so often that the backward kernel splits their positions into slices (8, 4, 4).
  const int64_t shapes[][5] = {{1, 1, 1, 1, -1},     {10, 3, 20, 10, 4},   {50, 8, 21, 4, -1}, {300, 130, 17, 300, 5},
                               {64, 7, 0, 64, -1},   {20, 1100, 6, 20, 3}, {40, 1, 30, 5, 2},  {30, 37, 300, 3, 1},
                               {10, 130, 150, 2, -1}, {12, 64, 200, 4, -1}};
  for (const auto& s : shapes) {
    for (int offset : {0, 1}) {
      for (bool int64_ids : {false, true}) {
        embedding_case(s[0], s[1], s[2], s[3], s[4], MaxNorm::kOff, 2.0f, int64_ids, offset);
        embedding_case(s[0], s[1], s[2], s[3], s[4], MaxNorm::kSplit, 2.0f, int64_ids, offset);
      }
      for (float norm_type : {1.0f, 3.0f, 0.5f}) {
        embedding_case(s[0], s[1], s[2], s[3], s[4], MaxNorm::kSplit, norm_type, true, offset);
      }
      embedding_case(s[0], s[1], s[2], s[3], s[4], MaxNorm::kAllAbove, 2.0f, true, offset);
      embedding_case(s[0], s[1], s[2], s[3], s[4], MaxNorm::kAllBelow, 1.5f, true, offset);
    }
  }
}

// Gradient rows that name no valid row (out of range, padding_idx), positions out of range, and
// starts out of order: zero rows, nothing read or written out of bounds.
void embedding_bad_rows_case(float max_norm) {
  const std::string name = "embedding bad gradient rows max_norm=" + std::to_string(max_norm);
  const int64_t num = 6, dim = 5, count = 4, padding_idx = 2;
  const auto mu = random_floats(num * dim, 0, 0.5f), rho = random_floats(num * dim, -3, 1),
             dy = random_floats(count * dim, 0, 1);
  const std::vector<int64_t> ids = {0, 0, 0, 0};
  const cuda::EmbeddingParams p{ids.data(), true, count, num, dim, mu.data(), rho.data(), stream_from_seed(5, 5),
                                padding_idx, max_norm, 2.0f};
  // Rows -1, num, padding_idx; row 1 with positions -1 and count only; row 4 with starts reversed.
  const std::vector<int64_t> rows = {-1, num, padding_idx, 1, 4}, positions = {0, 1, 2, -1, 4, 3},
                             starts = {0, 1, 2, 3, 5, 4};
  const cuda::EmbeddingGradRows view{rows.data(), 5, positions.data(), static_cast<int64_t>(positions.size()),
                                     starts.data(), 2};
  auto dmu = poisoned(5 * dim), drho = poisoned(5 * dim);
  cuda::embedding_backward(p, view, dy.data(), dmu.data(), drho.data(), nullptr);
  const std::vector<double> zeros(5 * dim, 0.0);
  expect_close(name + " dw_mu", dmu.data(), zeros);
  expect_close(name + " dw_rho", drho.data(), zeros);
}

}  // namespace
}  // namespace fusedbnn

int main() {
  using namespace fusedbnn;
  for (int offset : {0, 1}) {
    for (int64_t n : {0, 1, 3, 4, 5, 127, 1001, 4099}) gaussian_case(n, offset);
    // (rows, in, out): around the 32 / 64 / 256 tiles, both Linear plans (<= 64 rows fused).
    const int64_t shapes[][3] = {{1, 1, 1},    {1, 33, 17},   {2, 5, 3},    {5, 130, 257}, {32, 64, 256},
                                 {33, 70, 300}, {64, 40, 70}, {65, 40, 70}, {70, 100, 260}, {0, 16, 8},
                                 {7, 0, 5},    {3, 5, 0},     {4, 300, 9}};
    for (const auto& s : shapes) {
      for (bool bias : {false, true}) linear_case(s[0], s[1], s[2], bias, offset);
    }
  }
  embedding_cases();
  for (float max_norm : {0.0f, 0.01f}) embedding_bad_rows_case(max_norm);
  std::printf("cuda_emulation: %s (%d failures)\n", failures ? "FAILED" : "all kernels match", failures);
  return failures != 0;
}
