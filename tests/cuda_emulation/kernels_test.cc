// Every CUDA kernel of csrc/core against double-precision loops over the host noise (eps_at), run
// on the CPU through cuda_runtime.h here. Outputs start as NaN, so unwritten elements fail; every
// case runs with 16-byte-aligned and with misaligned pointers (the kernels' vector and scalar
// paths), sizes off every tile, batch 0 and 1, empty sizes, repeated and out-of-range ids.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/conv_cuda.h"
#include "core/cuda_common.cuh"
#include "core/embedding_cuda.h"
#include "core/estimators_cuda.h"
#include "core/gaussian_cuda.h"
#include "core/linear_cuda.h"
#include "core/lstm_cuda.h"

namespace fusedbnn {

void avx2_fill_normal(const NoiseStream& s, int64_t n, float* out);  // cpu_noise_avx2.cc

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

// One element's one-sample KL term at `sample` = mu + softplus(r) e, added to *kl, and dkl times its
// gradient added to *dmu and *drho: what the layer kernels with a KL output compute.
void add_kl_term(double r, double e, double sample, double mean, double std_prior, double dkl, double* kl, double* dmu,
                 double* drho) {
  const double sigma = softplus(r), z = (sample - mean) / std_prior;
  *kl += std::log(std_prior) - std::log(sigma) + 0.5 * (z * z - e * e);
  const double pull = dkl * (sample - mean) / (std_prior * std_prior);
  *dmu += pull;
  *drho += (pull * e - dkl / sigma) * sigmoid_d(r);
}

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

// The kernels' softplus (a polynomial log1p, as the vectorised CPU kernels'): within 1e-6 relative
// of libm's over rho from -80 (sigma ~ 1e-35) to 1e4, as tests/test_core.py checks the CPU's.
void softplus_case() {
  double worst = 0.0;
  for (int k = 0; k <= 200000; ++k) {
    const float r = -80.0f + static_cast<float>(k) * (1e4f + 80.0f) / 200000.0f;
    const double exact = stable_softplus(r);
    worst = std::max(worst, std::abs(cuda::softplus(r) - exact) / exact);
  }
  for (float r : {-INFINITY, INFINITY}) worst = std::max(worst, cuda::softplus(r) == stable_softplus(r) ? 0.0 : 1.0);
  if (worst > 1e-6) {
    std::printf("FAIL softplus: relative error %.3g\n", worst);
    ++failures;
  }
}

// The kernels' normals (`normals`, from fill_normal) element by element: within the GPU tests'
// bound of TensorFlow's (1e-6 relative to max(1, |eps|)); the same bits as the vectorised CPU
// kernels' (where this CPU has AVX2 and FMA); and as eps4's at every start, whose runs straddle two
// Philox groups when the start is not a multiple of 4.
void expect_same_noise(const std::string& name, const NoiseStream& s, const float* normals,
                       const std::vector<double>& eps) {
  const int64_t n = static_cast<int64_t>(eps.size());
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::fabs(normals[i] - eps[i]) / std::max(1.0, std::fabs(eps[i])));
  }
  if (!(worst <= 1e-6)) {
    ++failures;
    std::printf("FAIL %s normal: element error %.3g relative to max(1, |eps|)\n", name.c_str(), worst);
  }
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    std::vector<float> cpu(n);
    avx2_fill_normal(s, n, cpu.data());
    if (n > 0 && std::memcmp(cpu.data(), normals, n * sizeof(float)) != 0) {
      ++failures;
      std::printf("FAIL %s normal: not the bits of the AVX2 CPU kernel\n", name.c_str());
    }
  }
  for (int64_t f = 0; f + 4 <= n; ++f) {
    float e[4];
    cuda::eps4(s, static_cast<uint64_t>(f), e);
    if (std::memcmp(e, normals + f, sizeof(e)) != 0) {
      ++failures;
      std::printf("FAIL %s eps4 at %lld: not the kernel's normals\n", name.c_str(), static_cast<long long>(f));
      return;
    }
  }
}

void gaussian_case(int64_t n, int offset) {
  const std::string name = "gaussian n=" + std::to_string(n) + " offset=" + std::to_string(offset);
  const NoiseStream s = stream_from_seed(n, -7);
  const auto mu_v = random_floats(n, 0.0f, 0.5f), rho_v = random_floats(n, -3.0f, 1.0f), dw_v = random_floats(n, 0, 1);
  const float *mu = mu_v.data() + offset, *rho = rho_v.data() + offset, *dw = dw_v.data() + offset;
  std::vector<double> eps(n), w(n), drho(n);
  for (int64_t i = 0; i < n; ++i) {
    eps[i] = eps_at(s, i);
    w[i] = mu[i] + softplus(rho[i]) * eps[i];
    drho[i] = dw[i] * eps[i] * sigmoid_d(rho[i]);
  }
  auto out = poisoned(n), out2 = poisoned(n), out3 = poisoned(n);
  cuda::fill_normal(s, n, out.data() + offset, nullptr);
  expect_close(name + " normal", out.data() + offset, eps, 1e-6);
  expect_same_noise(name, s, out.data() + offset, eps);
  cuda::sample_gaussian(s, n, mu, rho, out.data() + offset, nullptr);
  expect_close(name + " sample", out.data() + offset, w);
  cuda::sample_gaussian_grad(s, n, dw, mu, rho, out2.data() + offset, out3.data() + offset, nullptr);
  expect_close(name + " grad drho", out2.data() + offset, drho);
  expect_close(name + " grad w", out3.data() + offset, w);
  auto alone = poisoned(n);
  cuda::sample_gaussian_grad(s, n, dw, nullptr, rho, alone.data() + offset, nullptr, nullptr);
  expect_close(name + " grad drho alone", alone.data() + offset, drho);

  // The one-sample and the closed-form KL, with one prior mean and with one per element.
  const float mu_prior = 0.1f, std_prior = 0.3f, dkl = 1.7f, var = std_prior * std_prior;
  const auto means_v = random_floats(n, 0.1f, 0.5f);
  std::vector<char> scratch(cuda::gaussian_kl_scratch_bytes());
  for (bool per_element : {false, true}) {
    const GaussianPrior prior{per_element ? means_v.data() + offset : &mu_prior, per_element, std_prior};
    const std::string kl_name = name + (per_element ? " per-element prior" : "");
    double kl = 0.0, analytic = 0.0;
    std::vector<double> kl_dmu(n), kl_drho(n), analytic_dmu(n), analytic_drho(n);
    for (int64_t i = 0; i < n; ++i) {
      const double sigma = softplus(rho[i]), mean = per_element ? prior.mean[i] : mu_prior, d = mu[i] - mean;
      const double z = (w[i] - mean) / std_prior;
      kl += std::log(std_prior) - std::log(sigma) + 0.5 * (z * z - eps[i] * eps[i]);
      kl_dmu[i] = dkl * (w[i] - mean) / var;
      kl_drho[i] = (kl_dmu[i] * eps[i] - dkl / sigma) * sigmoid_d(rho[i]);
      analytic += std::log(std_prior / sigma) + (sigma * sigma + d * d) / (2 * var) - 0.5;
      analytic_dmu[i] = dkl * d / var;
      analytic_drho[i] = dkl * (sigma / var - 1 / sigma) * sigmoid_d(rho[i]);
    }
    float kl_value = NAN;
    cuda::gaussian_kl(s, n, mu, rho, prior, scratch.data(), &kl_value, nullptr);
    expect_close(kl_name + " kl", &kl_value, {kl});
    auto dmu = poisoned(n), dr = poisoned(n);
    cuda::gaussian_kl_grad(s, n, mu, rho, prior, &dkl, dmu.data(), dr.data(), nullptr);
    expect_close(kl_name + " kl dmu", dmu.data(), kl_dmu);
    expect_close(kl_name + " kl drho", dr.data(), kl_drho);
    kl_value = NAN;
    cuda::gaussian_kl_analytic(n, mu, rho, prior, scratch.data(), &kl_value, nullptr);
    expect_close(kl_name + " kl analytic", &kl_value, {analytic});
    // The sample and its KL from sample_gaussian_kl, and both gradients in one pass.
    auto w_kl = poisoned(n);
    kl_value = NAN;
    cuda::sample_gaussian_kl(s, n, mu, rho, prior, scratch.data(), w_kl.data(), &kl_value, nullptr);
    expect_close(kl_name + " sample_kl w", w_kl.data(), w);
    expect_close(kl_name + " sample_kl kl", &kl_value, {kl});
    std::vector<double> both_dmu(n), both_drho(n);
    for (int64_t i = 0; i < n; ++i) {
      both_dmu[i] = dw[i] + kl_dmu[i];
      both_drho[i] = drho[i] + kl_drho[i];
    }
    dmu = poisoned(n), dr = poisoned(n);
    cuda::sample_gaussian_grad_kl(s, n, dw, mu, rho, prior, &dkl, dmu.data(), dr.data(), nullptr);
    expect_close(kl_name + " sample_kl dmu", dmu.data(), both_dmu);
    expect_close(kl_name + " sample_kl drho", dr.data(), both_drho);
    dmu = poisoned(n), dr = poisoned(n);
    cuda::gaussian_kl_analytic_grad(n, mu, rho, prior, &dkl, dmu.data(), dr.data(), nullptr);
    expect_close(kl_name + " kl analytic dmu", dmu.data(), analytic_dmu);
    expect_close(kl_name + " kl analytic drho", dr.data(), analytic_drho);
  }
}

// with_kl: the KL output and dkl's terms too, a per-element prior mean on W (one mean on b).
void linear_case(int64_t rows, int64_t in, int64_t out, bool bias, int offset, bool with_kl = false) {
  const std::string name = "linear " + std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out) +
                           (bias ? " bias" : "") + (with_kl ? " kl" : "") + " offset=" + std::to_string(offset);
  const auto x = random_floats(rows * in, 0, 1), mu = random_floats(out * in, 0, 0.5f),
             rho = random_floats(out * in, -3, 1), b_mu = random_floats(out, 0, 0.5f),
             b_rho = random_floats(out, -3, 1), dy_v = random_floats(rows * out, 0, 1);
  LinearParams p{
      x.data() + offset,          rows, in,          out,          mu.data() + offset,      rho.data() + offset,
      stream_from_seed(rows, in), bias, b_mu.data(), b_rho.data(), stream_from_seed(out, 3)};
  const float* dy = dy_v.data() + offset;
  const auto w_means = random_floats(out * in, 0.1f, 0.5f);
  const float b_mean = 0.2f, dkl = 1.3f;
  p.with_kl = with_kl;
  p.w_prior = GaussianPrior{w_means.data(), true, 0.4f};
  p.b_prior = GaussianPrior{&b_mean, false, 0.3f};

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
  // The KL of W and b at the sample, and dkl times its gradient added to the others.
  double kl = 0.0;
  for (int64_t i = 0; with_kl && i < out * in; ++i) {
    add_kl_term(p.w_rho[i], eps[i], w[i], w_means[i], 0.4, dkl, &kl, &dw_mu[i], &dw_rho[i]);
  }
  for (int64_t o = 0; with_kl && bias && o < out; ++o) {
    add_kl_term(b_rho[o], b_eps[o], b[o], b_mean, 0.3, dkl, &kl, &db_mu[o], &db_rho[o]);
  }

  std::vector<char> forward_scratch(cuda::linear_forward_scratch_bytes(p));
  auto y_out = poisoned(rows * out);
  float kl_out = NAN;
  cuda::linear_forward(p, forward_scratch.data(), y_out.data(), nullptr, with_kl ? &kl_out : nullptr);
  expect_close(name + " y", y_out.data(), y);
  if (with_kl) expect_close(name + " kl", &kl_out, {kl});
  std::vector<char> backward_scratch(cuda::linear_backward_scratch_bytes(p));
  auto dx_out = poisoned(rows * in), dmu_out = poisoned(out * in), drho_out = poisoned(out * in);
  auto dbmu_out = poisoned(out), dbrho_out = poisoned(out);
  LinearGradParams grad{p, dy, dx_out.data(), dmu_out.data(), drho_out.data(), dbmu_out.data(), dbrho_out.data()};
  if (with_kl) grad.dkl = &dkl;
  cuda::linear_backward(grad, backward_scratch.data(), nullptr);
  expect_close(name + " dx", dx_out.data(), dx);
  expect_close(name + " dw_mu", dmu_out.data(), dw_mu);
  expect_close(name + " dw_rho", drho_out.data(), dw_rho);
  if (bias) {
    expect_close(name + " db_mu", dbmu_out.data(), db_mu);
    expect_close(name + " db_rho", dbrho_out.data(), db_rho);
  }
}

// Both per-example estimators, forward and backward, in double from the host noise and signs; the
// local reparameterization backward starts from the kernel's own y_std, as the op does. Flipout's
// signs are those of row r / rows_per_example.
void estimator_case(LinearEstimator estimator, int64_t rows, int64_t in, int64_t out, bool bias, int offset,
                    int64_t rows_per_example = 1) {
  const bool flipout = estimator == LinearEstimator::kFlipout;
  const std::string name = std::string(flipout ? "flipout " : "local reparameterization ") + std::to_string(rows) +
                           "x" + std::to_string(in) + "->" + std::to_string(out) + (bias ? " bias" : "") +
                           " offset=" + std::to_string(offset) + " rows/example=" + std::to_string(rows_per_example);
  const auto x = random_floats(rows * in, 0, 1), mu = random_floats(out * in, 0, 0.5f),
             rho = random_floats(out * in, -3, 1), b_mu = random_floats(out, 0, 0.5f),
             b_rho = random_floats(out, -3, 1), dy_v = random_floats(rows * out, 0, 1);
  const LinearParams p{x.data() + offset, rows, in, out, mu.data() + offset, rho.data() + offset,
                       stream_from_seed(rows, in), bias, b_mu.data(), b_rho.data(), stream_from_seed(out, 3)};
  const NoiseStream x_stream = stream_from_seed(in * 7 + rows, out - 5);
  const float* dy = dy_v.data() + offset;
  // The signs of every row [rows, width]: element (r / rows_per_example, c) of the stream.
  const auto signs = [&](EstimatorStream k, int64_t width) {
    std::vector<double> v(rows * width);
    const NoiseStream s = derived_stream(x_stream, k);
    for (int64_t i = 0; i < rows * width; ++i) {
      const int64_t e = i / width / rows_per_example * width + i % width;
      float group[4];
      sign_group(s, e / 4, group);
      v[i] = group[e % 4];
    }
    return v;
  };
  const std::vector<double> s_in = signs(EstimatorStream::kSignsIn, in), s_out = signs(EstimatorStream::kSignsOut, out);
  const NoiseStream eps_out_stream = derived_stream(x_stream, EstimatorStream::kOutputNoise);

  std::vector<double> eps(out * in), sigma(out * in), b(out, 0.0), b_eps(out, 0.0);
  for (int64_t i = 0; i < out * in; ++i) {
    eps[i] = eps_at(p.w_stream, i);
    sigma[i] = softplus(p.w_rho[i]);
  }
  for (int64_t o = 0; bias && o < out; ++o) {
    b_eps[o] = eps_at(p.b_stream, o);
    b[o] = b_mu[o] + softplus(b_rho[o]) * b_eps[o];
  }
  // Forward.
  std::vector<double> y(rows * out), y_std(rows * out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double mean = 0.0, noise = 0.0;
      for (int64_t k = 0; k < in; ++k) {
        const int64_t w = o * in + k, xi = r * in + k;
        mean += p.x[xi] * p.w_mu[w];
        noise += flipout ? p.x[xi] * s_in[xi] * sigma[w] * eps[w] : p.x[xi] * p.x[xi] * sigma[w] * sigma[w];
      }
      const int64_t i = r * out + o;
      y_std[i] = std::sqrt(noise);
      y[i] = mean + (flipout ? noise * s_out[i] : y_std[i] * eps_at(eps_out_stream, i)) + b[o];
    }
  }
  std::vector<char> forward_scratch(cuda::estimator_forward_scratch_bytes(estimator, p));
  auto y_out = poisoned(rows * out), y_std_out = poisoned(rows * out);
  if (flipout) {
    cuda::flipout_linear_forward(p, x_stream, rows_per_example, forward_scratch.data(), y_out.data(), nullptr);
  } else {
    cuda::local_reparam_linear_forward(p, x_stream, forward_scratch.data(), y_out.data(), y_std_out.data(), nullptr);
    expect_close(name + " y_std", y_std_out.data(), y_std);
  }
  expect_close(name + " y", y_out.data(), y);

  // Backward: with the noise term's output gradient t (flipout: dy * s_out; local reparameterization:
  // dvar), dx = dy mu + t-product, dmu = dy^T x, drho from t^T (x * s_in) or t^T x^2.
  std::vector<double> t(rows * out);
  for (int64_t i = 0; i < rows * out; ++i) {
    const double scale = flipout ? 0.0 : y_std_out[i];
    t[i] = flipout ? dy[i] * s_out[i] : scale == 0.0 ? 0.0 : dy[i] * eps_at(eps_out_stream, i) / (2.0 * scale);
  }
  std::vector<double> dx(rows * in, 0.0), dw_mu(out * in, 0.0), dw_rho(out * in), db_mu(out, 0.0), db_rho(out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      const int64_t yi = r * out + o;
      db_mu[o] += dy[yi];
      for (int64_t k = 0; k < in; ++k) {
        const int64_t w = o * in + k, xi = r * in + k;
        dw_mu[w] += dy[yi] * p.x[xi];
        dx[xi] += dy[yi] * p.w_mu[w] +
                  (flipout ? t[yi] * sigma[w] * eps[w] * s_in[xi] : 2.0 * p.x[xi] * t[yi] * sigma[w] * sigma[w]);
      }
    }
  }
  for (int64_t w = 0; w < out * in; ++w) {
    const int64_t o = w / in, k = w % in;
    double d = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t xi = r * in + k;
      d += t[r * out + o] * (flipout ? p.x[xi] * s_in[xi] : p.x[xi] * p.x[xi]);
    }
    dw_rho[w] = d * (flipout ? eps[w] : 2.0 * sigma[w]) * sigmoid_d(p.w_rho[w]);
  }
  for (int64_t o = 0; o < out; ++o) db_rho[o] = db_mu[o] * b_eps[o] * sigmoid_d(b_rho[o]);

  std::vector<char> backward_scratch(cuda::estimator_backward_scratch_bytes(estimator, p));
  auto dx_out = poisoned(rows * in), dmu_out = poisoned(out * in), drho_out = poisoned(out * in);
  auto dbmu_out = poisoned(out), dbrho_out = poisoned(out);
  const LinearGradParams grad{p, dy, dx_out.data(), dmu_out.data(), drho_out.data(), dbmu_out.data(), dbrho_out.data()};
  if (flipout) {
    cuda::flipout_linear_backward(grad, x_stream, rows_per_example, backward_scratch.data(), nullptr);
  } else {
    cuda::local_reparam_linear_backward(grad, x_stream, y_std_out.data(), backward_scratch.data(), nullptr);
  }
  expect_close(name + " dx", dx_out.data(), dx);
  expect_close(name + " dw_mu", dmu_out.data(), dw_mu);
  expect_close(name + " dw_rho", drho_out.data(), dw_rho);
  if (bias) {
    expect_close(name + " db_mu", dbmu_out.data(), db_mu);
    expect_close(name + " db_rho", dbrho_out.data(), db_rho);
  }
}

void estimator_cases() {
  // (rows, in, out): one element, sizes off the 4-element groups and the 64 x 64 tiles, batch 0 and
  // empty features.
  const int64_t shapes[][3] = {{1, 1, 1}, {2, 5, 3}, {5, 130, 67}, {65, 7, 70}, {0, 16, 8}, {7, 0, 5}, {3, 5, 0}};
  for (LinearEstimator estimator : {LinearEstimator::kFlipout, LinearEstimator::kLocalReparam}) {
    for (int offset : {0, 1}) {
      for (const auto& s : shapes) estimator_case(estimator, s[0], s[1], s[2], offset == 0, offset);
    }
  }
  // Several rows per example (x [examples, positions, in]): 3 examples of 4 and 2 of 33, widths off
  // the signs' 4-element groups.
  for (int offset : {0, 1}) {
    estimator_case(LinearEstimator::kFlipout, 12, 5, 7, offset == 0, offset, 4);
    estimator_case(LinearEstimator::kFlipout, 66, 130, 67, offset == 1, offset, 33);
  }
  // The products pick their tiles from the multiprocessor count: at 65 x 7 -> 70 these counts reach
  // every choice in the forward and the backward products.
  const std::string sms_before = std::getenv("CUDA_EMULATION_SMS") ? std::getenv("CUDA_EMULATION_SMS") : "3";
  for (const char* sms : {"2", "5", "11"}) {
    setenv("CUDA_EMULATION_SMS", sms, 1);
    for (LinearEstimator estimator : {LinearEstimator::kFlipout, LinearEstimator::kLocalReparam}) {
      estimator_case(estimator, 65, 7, 70, true, 0);
    }
  }
  setenv("CUDA_EMULATION_SMS", sms_before.c_str(), 1);
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

  std::vector<double> out(count * dim, 0.0), dw_drho(count * dim, 0.0);
  bool any_bad = false;
  for (int64_t n = 0; n < count; ++n) {
    const int64_t id = ids64[n];
    any_bad |= id < 0 || id >= num;
    if (id < 0 || id >= num || id == padding_idx) continue;
    const double scale = rescaled(id) ? p.max_norm / norms[id] : 1.0;
    for (int64_t c = 0; c < dim; ++c) {
      out[n * dim + c] = w[id][c] * scale;
      dw_drho[n * dim + c] = eps[id][c] * sigmoid_d(p.w_rho[id * dim + c]);
    }
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

  auto out_v = poisoned(count * dim), dw_drho_v = poisoned(count * dim);
  int bad_id = 0;
  cuda::embedding_forward(p, out_v.data() + offset, dw_drho_v.data() + offset, &bad_id, nullptr);
  expect_close(name + " out", out_v.data() + offset, out);
  expect_close(name + " dw_drho", dw_drho_v.data() + offset, dw_drho);
  if (bad_id != static_cast<int>(any_bad)) {
    ++failures;
    std::printf("FAIL %s: bad_id flag %d\n", name.c_str(), bad_id);
  }
  auto dmu_out = poisoned(unique * dim), drho_out = poisoned(unique * dim);
  // The backward pass reads the forward pass's dw_drho, as the TensorFlow op does.
  const cuda::EmbeddingGradParams grad{p, dy, dw_drho_v.data() + offset, dmu_out.data() + offset,
                                       drho_out.data() + offset};
  cuda::embedding_backward(grad, rows.device_view(), nullptr);
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
             dy = random_floats(count * dim, 0, 1), dw_drho = random_floats(count * dim, 0, 1);
  const std::vector<int64_t> ids = {0, 0, 0, 0};
  const cuda::EmbeddingParams p{ids.data(), true, count, num, dim, mu.data(), rho.data(), stream_from_seed(5, 5),
                                padding_idx, max_norm, 2.0f};
  // Rows -1, num, padding_idx; row 1 with positions -1 and count only; row 4 with starts reversed.
  const std::vector<int64_t> rows = {-1, num, padding_idx, 1, 4}, positions = {0, 1, 2, -1, 4, 3},
                             starts = {0, 1, 2, 3, 5, 4};
  const cuda::EmbeddingGradRows view{rows.data(), 5, positions.data(), static_cast<int64_t>(positions.size()),
                                     starts.data(), 2};
  auto dmu = poisoned(5 * dim), drho = poisoned(5 * dim);
  cuda::embedding_backward(cuda::EmbeddingGradParams{p, dy.data(), dw_drho.data(), dmu.data(), drho.data()}, view,
                           nullptr);
  const std::vector<double> zeros(5 * dim, 0.0);
  expect_close(name + " dw_mu", dmu.data(), zeros);
  expect_close(name + " dw_rho", drho.data(), zeros);
}


// One convolution's sizes and options; padding: -1 VALID, -2 SAME, else explicit pads[4].
struct ConvCase {
  int64_t batch, in_h, in_w, in_c, out_c, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  int padding;
  int64_t pads[4];  // top, bottom, left, right (explicit)
  int64_t groups;
  bool channels_last, bias;
};

// TensorFlow's output size and leading padding of one axis.
void conv_axis_reference(int64_t in, int64_t k, int64_t stride, int64_t dilation, int padding, int64_t before,
                         int64_t after, int64_t* out, int64_t* pad) {
  const int64_t window = (k - 1) * dilation + 1;
  if (padding == -2) {
    *out = (in + stride - 1) / stride;
    *pad = std::max<int64_t>((*out - 1) * stride + window - in, 0) / 2;
    return;
  }
  if (padding == -1) before = after = 0;
  *out = (in + before + after - window) / stride + 1;
  *pad = before;
}

void conv_case(const ConvCase& c, int offset) {
  const std::string name = "conv b=" + std::to_string(c.batch) + " " + std::to_string(c.in_h) + "x" +
                           std::to_string(c.in_w) + "x" + std::to_string(c.in_c) + "->" + std::to_string(c.out_c) +
                           " k=" + std::to_string(c.kernel_h) + "x" + std::to_string(c.kernel_w) + " s=" +
                           std::to_string(c.stride_h) + "," + std::to_string(c.stride_w) + " d=" +
                           std::to_string(c.dilation_h) + "," + std::to_string(c.dilation_w) +
                           " pad=" + std::to_string(c.padding) + " g=" + std::to_string(c.groups) +
                           (c.channels_last ? " NHWC" : " NCHW") + (c.bias ? " bias" : "") +
                           " offset=" + std::to_string(offset);
  ConvParams p{};
  p.batch = c.batch, p.in_h = c.in_h, p.in_w = c.in_w, p.in_channels = c.in_c, p.out_channels = c.out_c;
  p.kernel_h = c.kernel_h, p.kernel_w = c.kernel_w, p.stride_h = c.stride_h, p.stride_w = c.stride_w;
  p.dilation_h = c.dilation_h, p.dilation_w = c.dilation_w, p.groups = c.groups, p.channels_last = c.channels_last;
  conv_axis_reference(c.in_h, c.kernel_h, c.stride_h, c.dilation_h, c.padding, c.pads[0], c.pads[1], &p.out_h,
                      &p.pad_top);
  conv_axis_reference(c.in_w, c.kernel_w, c.stride_w, c.dilation_w, c.padding, c.pads[2], c.pads[3], &p.out_w,
                      &p.pad_left);
  const int64_t cin_g = c.in_c / c.groups, cout_g = c.out_c / c.groups;
  const int64_t nx = c.batch * c.in_h * c.in_w * c.in_c, ny = c.batch * p.out_h * p.out_w * c.out_c;
  const int64_t nw = c.kernel_h * c.kernel_w * cin_g * c.out_c;
  const auto x = random_floats(nx, 0, 1), mu = random_floats(nw, 0, 0.5f), rho = random_floats(nw, -3, 1),
             b_mu = random_floats(c.out_c, 0, 0.5f), b_rho = random_floats(c.out_c, -3, 1),
             dy_v = random_floats(ny, 0, 1);
  p.x = x.data() + offset;
  p.w_mu = mu.data() + offset;
  p.w_rho = rho.data() + offset;
  p.w_stream = stream_from_seed(nw, c.groups);
  p.has_bias = c.bias;
  p.b_mu = b_mu.data();
  p.b_rho = b_rho.data();
  p.b_stream = stream_from_seed(c.out_c, 11);
  const float* dy = dy_v.data() + offset;
  if (cuda::conv_size_error(p) != nullptr) {
    ++failures;
    std::printf("FAIL %s: rejected sizes\n", name.c_str());
    return;
  }

  // Flat indices of x and y in the case's layout.
  const auto xi = [&](int64_t b, int64_t h, int64_t w, int64_t ch) {
    return c.channels_last ? ((b * c.in_h + h) * c.in_w + w) * c.in_c + ch : ((b * c.in_c + ch) * c.in_h + h) * c.in_w + w;
  };
  const auto yi = [&](int64_t b, int64_t h, int64_t w, int64_t ch) {
    return c.channels_last ? ((b * p.out_h + h) * p.out_w + w) * c.out_c + ch
                           : ((b * c.out_c + ch) * p.out_h + h) * p.out_w + w;
  };
  std::vector<double> w(nw), eps(nw), bias(c.out_c, 0.0), b_eps(c.out_c, 0.0);
  for (int64_t i = 0; i < nw; ++i) {
    eps[i] = eps_at(p.w_stream, i);
    w[i] = p.w_mu[i] + softplus(p.w_rho[i]) * eps[i];
  }
  for (int64_t o = 0; c.bias && o < c.out_c; ++o) {
    b_eps[o] = eps_at(p.b_stream, o);
    bias[o] = b_mu[o] + softplus(b_rho[o]) * b_eps[o];
  }
  std::vector<double> y(ny), dx(nx, 0.0), dw_mu(nw, 0.0), dw_rho(nw), db_mu(c.out_c, 0.0), db_rho(c.out_c);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t oh = 0; oh < p.out_h; ++oh)
      for (int64_t ow = 0; ow < p.out_w; ++ow)
        for (int64_t o = 0; o < c.out_c; ++o) {
          const int64_t g = o / cout_g, yo = yi(b, oh, ow, o);
          double sum = bias[o];
          db_mu[o] += dy[yo];
          for (int64_t i = 0; i < c.kernel_h; ++i)
            for (int64_t j = 0; j < c.kernel_w; ++j) {
              const int64_t ih = oh * c.stride_h - p.pad_top + i * c.dilation_h;
              const int64_t iw = ow * c.stride_w - p.pad_left + j * c.dilation_w;
              if (ih < 0 || ih >= c.in_h || iw < 0 || iw >= c.in_w) continue;
              for (int64_t ch = 0; ch < cin_g; ++ch) {
                const int64_t xo = xi(b, ih, iw, g * cin_g + ch), wo = ((i * c.kernel_w + j) * cin_g + ch) * c.out_c + o;
                sum += p.x[xo] * w[wo];
                dx[xo] += dy[yo] * w[wo];
                dw_mu[wo] += p.x[xo] * dy[yo];
              }
            }
          y[yo] = sum;
        }
  for (int64_t i = 0; i < nw; ++i) dw_rho[i] = dw_mu[i] * eps[i] * sigmoid_d(p.w_rho[i]);
  for (int64_t o = 0; o < c.out_c; ++o) db_rho[o] = db_mu[o] * b_eps[o] * sigmoid_d(b_rho[o]);

  std::vector<char> forward_scratch(cuda::conv_forward_scratch_bytes(p));
  auto y_out = poisoned(ny);
  cuda::conv_forward(p, forward_scratch.data(), y_out.data(), nullptr);
  expect_close(name + " y", y_out.data(), y);
  std::vector<char> backward_scratch(cuda::conv_backward_scratch_bytes(p));
  auto dx_out = poisoned(nx), dmu_out = poisoned(nw), drho_out = poisoned(nw);
  auto dbmu_out = poisoned(c.out_c), dbrho_out = poisoned(c.out_c);
  const ConvGradParams grad{p, dy, dx_out.data(), dmu_out.data(), drho_out.data(), dbmu_out.data(), dbrho_out.data()};
  cuda::conv_backward(grad, backward_scratch.data(), nullptr);
  expect_close(name + " dx", dx_out.data(), dx);
  expect_close(name + " dw_mu", dmu_out.data(), dw_mu);
  expect_close(name + " dw_rho", drho_out.data(), dw_rho);
  if (c.bias) {
    expect_close(name + " db_mu", dbmu_out.data(), db_mu);
    expect_close(name + " db_rho", dbrho_out.data(), db_rho);
  }
}

void conv_cases() {
  // {batch, in_h, in_w, in_c, out_c, kh, kw, sh, sw, dh, dw, padding, pads, groups, NHWC, bias}
  const ConvCase cases[] = {
      {2, 5, 7, 3, 4, 3, 3, 1, 1, 1, 1, -1, {}, 1, true, true},              // VALID, odd sizes
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, {}, 1, true, true},              // everything 1
      {1, 6, 5, 3, 2, 1, 1, 1, 1, 1, 1, -2, {}, 1, false, false},            // 1x1, batch 1, NCHW
      {3, 9, 8, 3, 70, 3, 3, 1, 1, 2, 2, -2, {}, 1, true, true},             // dilation, SAME, > 64 columns
      {2, 7, 6, 4, 6, 3, 2, 2, 2, 2, 1, 0, {1, 2, 0, 1}, 2, true, true},     // groups, explicit, stride 2
      {2, 7, 6, 4, 6, 3, 2, 2, 2, 2, 1, 0, {1, 2, 0, 1}, 2, false, true},    // the same in NCHW
      {2, 6, 7, 5, 10, 3, 3, 2, 1, 1, 1, -2, {}, 5, false, true},            // depthwise x2, NCHW
      {1, 5, 5, 6, 6, 3, 3, 1, 1, 1, 1, -2, {}, 6, true, false},             // depthwise
      {2, 10, 10, 20, 5, 3, 3, 1, 1, 1, 1, -1, {}, 1, true, true},           // 180 kernel rows, split dW
      {1, 1, 17, 4, 3, 1, 5, 1, 3, 1, 2, 0, {0, 0, 4, 1}, 1, true, true},    // conv1d: stride 3, dilation 2
      {2, 1, 16, 3, 5, 1, 4, 1, 1, 1, 1, -2, {}, 1, false, true},            // conv1d NCW, even kernel
      {2, 8, 7, 2, 3, 2, 2, 3, 3, 1, 1, -1, {}, 1, true, true},              // stride > kernel: dx gaps
      {0, 5, 5, 3, 4, 3, 3, 1, 1, 1, 1, -2, {}, 1, true, true},              // empty batch
      {2, 0, 4, 3, 4, 1, 1, 1, 1, 1, 1, -2, {}, 1, false, true},             // empty image
      {1, 0, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, {1, 1, 0, 0}, 1, true, true},     // empty x, padding-only y
  };
  for (int offset : {0, 1}) {
    for (const ConvCase& c : cases) conv_case(c, offset);
  }
}

// The LSTM forward and BPTT in double from the host noise; the backward starts from the kernel's
// own saved gates and cells, as the op does. dz runs in the gates' buffer when alias_dz. with_kl:
// the KL output and dkl's terms too, a per-element prior mean on W (one mean on b).
void lstm_case(int64_t B, int64_t T, int64_t E, int64_t H, bool zero_state, bool alias_dz, int offset,
               bool with_kl = false) {
  const std::string name = "lstm B=" + std::to_string(B) + " T=" + std::to_string(T) + " E=" + std::to_string(E) +
                           " H=" + std::to_string(H) + (zero_state ? " zero state" : "") +
                           (alias_dz ? " dz=gates" : "") + (with_kl ? " kl" : "") +
                           " offset=" + std::to_string(offset) + " sms=" +
                           std::getenv("CUDA_EMULATION_SMS");
  const int64_t G = 4 * H, R = E + H;
  const auto x = random_floats(B * T * E, 0, 1), w_mu = random_floats(R * G, 0, 0.5f),
             w_rho = random_floats(R * G, -3, 1), b_mu = random_floats(G, 0, 0.5f), b_rho = random_floats(G, -3, 1),
             h0_v = zero_state ? std::vector<float>(B * H + 8, 0.0f) : random_floats(B * H, 0, 0.5f),
             c0_v = zero_state ? std::vector<float>(B * H + 8, 0.0f) : random_floats(B * H, 0, 1),
             dh_seq = random_floats(B * T * H, 0, 1), dh_last = random_floats(B * H, 0, 1),
             dc_last = random_floats(B * H, 0, 1);
  LstmParams p{x.data() + offset, B, T, E, H, w_mu.data() + offset, w_rho.data() + offset,
               stream_from_seed(B * 7 + T, E * 5 + H), b_mu.data() + offset, b_rho.data() + offset,
               stream_from_seed(H, 11), h0_v.data() + offset, c0_v.data() + offset};
  const auto w_means = random_floats(R * G, 0.1f, 0.5f);
  const float b_mean = 0.2f, dkl = 1.3f;
  p.with_kl = with_kl;
  p.w_prior = GaussianPrior{w_means.data(), true, 0.4f};
  p.b_prior = GaussianPrior{&b_mean, false, 0.3f};
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };

  std::vector<double> w(R * G), w_eps(R * G), b(G), b_eps(G);
  for (int64_t i = 0; i < R * G; ++i) {
    w_eps[i] = eps_at(p.w_stream, i);
    w[i] = p.w_mu[i] + softplus(p.w_rho[i]) * w_eps[i];
  }
  for (int64_t i = 0; i < G; ++i) {
    b_eps[i] = eps_at(p.b_stream, i);
    b[i] = p.b_mu[i] + softplus(p.b_rho[i]) * b_eps[i];
  }
  std::vector<double> h_seq(B * T * H), gates(B * T * G), cells(B * T * H), h_last(B * H), c_last(B * H);
  for (int64_t bi = 0; bi < B; ++bi) {
    std::vector<double> h(p.h0 + bi * H, p.h0 + (bi + 1) * H), c(p.c0 + bi * H, p.c0 + (bi + 1) * H);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = bi * T + t;
      for (int64_t j = 0; j < G; ++j) {
        double z = b[j];
        for (int64_t e = 0; e < E; ++e) z += p.x[row * E + e] * w[e * G + j];
        for (int64_t k = 0; k < H; ++k) z += h[k] * w[(E + k) * G + j];
        gates[row * G + j] = j >= 2 * H && j < 3 * H ? std::tanh(z) : sig(z);
      }
      for (int64_t j = 0; j < H; ++j) {
        const double* gate = &gates[row * G + j];
        c[j] = gate[0] * c[j] + gate[H] * gate[2 * H];
        h[j] = gate[3 * H] * std::tanh(c[j]);
        cells[row * H + j] = c[j];
        h_seq[row * H + j] = h[j];
      }
    }
    std::copy(h.begin(), h.end(), h_last.begin() + bi * H);
    std::copy(c.begin(), c.end(), c_last.begin() + bi * H);
  }

  std::vector<char> forward_scratch(cuda::lstm_forward_scratch_bytes(p));
  auto w_out = poisoned(R * G), gates_out = poisoned(B * T * G), cells_out = poisoned(B * T * H),
       h_seq_out = poisoned(B * T * H), h_last_out = poisoned(B * H), c_last_out = poisoned(B * H);
  float kl_out = NAN;
  cuda::lstm_forward(p, LstmSaved{w_out.data(), gates_out.data(), cells_out.data()}, forward_scratch.data(),
                     h_seq_out.data(), h_last_out.data(), c_last_out.data(), nullptr, with_kl ? &kl_out : nullptr);
  expect_close(name + " w", w_out.data(), w);
  expect_close(name + " gates", gates_out.data(), gates);
  expect_close(name + " cells", cells_out.data(), cells);
  expect_close(name + " h_seq", h_seq_out.data(), h_seq);
  expect_close(name + " h_last", h_last_out.data(), h_last);
  expect_close(name + " c_last", c_last_out.data(), c_last);

  // BPTT over the kernel's saved values (float), in double.
  std::vector<double> dx(B * T * E, 0.0), dw(R * G, 0.0), db(G, 0.0), dh0(B * H), dc0(B * H);
  for (int64_t bi = 0; bi < B; ++bi) {
    std::vector<double> dh(dh_last.begin() + offset + bi * H, dh_last.begin() + offset + (bi + 1) * H),
        dc(dc_last.begin() + offset + bi * H, dc_last.begin() + offset + (bi + 1) * H), dz(G);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t row = bi * T + t;
      const float* gate = gates_out.data() + row * G;
      for (int64_t j = 0; j < H; ++j) {
        const double f = gate[j], i = gate[H + j], g = gate[2 * H + j], o = gate[3 * H + j];
        const double tc = std::tanh(static_cast<double>(cells_out[row * H + j]));
        const double c_prev = t == 0 ? p.c0[bi * H + j] : cells_out[(row - 1) * H + j];
        const double dht = dh[j] + dh_seq[offset + row * H + j];
        const double dct = dc[j] + dht * o * (1 - tc * tc);
        dz[j] = dct * c_prev * f * (1 - f);
        dz[H + j] = dct * g * i * (1 - i);
        dz[2 * H + j] = dct * i * (1 - g * g);
        dz[3 * H + j] = dht * tc * o * (1 - o);
        dc[j] = dct * f;
      }
      const float* h_prev = t == 0 ? p.h0 + bi * H : h_seq_out.data() + (row - 1) * H;
      for (int64_t k = 0; k < R; ++k) {
        const double in = k < E ? p.x[row * E + k] : h_prev[k - E];
        for (int64_t j = 0; j < G; ++j) dw[k * G + j] += in * dz[j];
      }
      for (int64_t j = 0; j < G; ++j) db[j] += dz[j];
      for (int64_t e = 0; e < E; ++e) {
        for (int64_t j = 0; j < G; ++j) dx[row * E + e] += dz[j] * w_out[e * G + j];
      }
      for (int64_t k = 0; k < H; ++k) {
        dh[k] = 0.0;
        for (int64_t j = 0; j < G; ++j) dh[k] += dz[j] * w_out[(E + k) * G + j];
      }
    }
    std::copy(dh.begin(), dh.end(), dh0.begin() + bi * H);
    std::copy(dc.begin(), dc.end(), dc0.begin() + bi * H);
  }
  std::vector<double> dw_rho(R * G), db_rho(G);
  for (int64_t i = 0; i < R * G; ++i) dw_rho[i] = dw[i] * w_eps[i] * sigmoid_d(p.w_rho[i]);
  for (int64_t i = 0; i < G; ++i) db_rho[i] = db[i] * b_eps[i] * sigmoid_d(p.b_rho[i]);
  // The KL of W and b at the sample, and dkl times its gradient added to the others.
  double kl = 0.0;
  for (int64_t i = 0; with_kl && i < R * G; ++i) {
    add_kl_term(p.w_rho[i], w_eps[i], w[i], w_means[i], 0.4, dkl, &kl, &dw[i], &dw_rho[i]);
  }
  for (int64_t i = 0; with_kl && i < G; ++i) {
    add_kl_term(p.b_rho[i], b_eps[i], b[i], b_mean, 0.3, dkl, &kl, &db[i], &db_rho[i]);
  }
  if (with_kl) expect_close(name + " kl", &kl_out, {kl});

  std::vector<char> backward_scratch(cuda::lstm_backward_scratch_bytes(p));
  auto dz_own = poisoned(B * T * G);
  auto dx_out = poisoned(B * T * E), dw_mu_out = poisoned(R * G), dw_rho_out = poisoned(R * G), db_mu_out = poisoned(G),
       db_rho_out = poisoned(G), dh0_out = poisoned(B * H), dc0_out = poisoned(B * H);
  const LstmForwardResult fwd{w_out.data(), gates_out.data(), cells_out.data(), h_seq_out.data()};
  LstmGradParams grad{p, fwd, dh_seq.data() + offset, dh_last.data() + offset, dc_last.data() + offset,
                      dx_out.data(), dh0_out.data(), dc0_out.data(), dw_mu_out.data(), dw_rho_out.data(),
                      db_mu_out.data(), db_rho_out.data()};
  if (with_kl) grad.dkl = &dkl;
  cuda::lstm_backward(grad, alias_dz ? gates_out.data() : dz_own.data(), backward_scratch.data(), nullptr);
  expect_close(name + " dx", dx_out.data(), dx);
  expect_close(name + " dh0", dh0_out.data(), dh0);
  expect_close(name + " dc0", dc0_out.data(), dc0);
  expect_close(name + " dw_mu", dw_mu_out.data(), dw);
  expect_close(name + " dw_rho", dw_rho_out.data(), dw_rho);
  expect_close(name + " db_mu", db_mu_out.data(), db);
  expect_close(name + " db_rho", db_rho_out.data(), db_rho);
}

// Sizes whose tiles would pass gridDim.y's limit of 65535 in a (rows, columns) grid: Linear and its
// estimators with 20 million outputs or inputs (the weight gradient's 64-row tiles pass it from
// 4,194,240 outputs), a convolution with 5 million input channels, an LSTM with 2.2 million hidden units. Their launches are
// checked against CUDA's limits, not run (cuda_runtime.h here); nothing is allocated.
void launch_limit_cases() {
  emulation_check_only = true;
  alignas(16) static float dummy[4];
  float* d = dummy;
  const int violations_before = emulated_limit_violations;
  for (int64_t rows : {1, 100}) {
    for (const auto& [in, out] : {std::pair<int64_t, int64_t>{1, 20000000}, {20000000, 1}}) {
      const LinearParams p{d, rows, in, out, d, d, stream_from_seed(1, 2), true, d, d, stream_from_seed(3, 4)};
      cuda::linear_forward(p, d, d, nullptr);
      cuda::linear_backward(LinearGradParams{p, d, d, d, d, d, d}, d, nullptr);
      const NoiseStream x_stream = stream_from_seed(9, 10);
      cuda::flipout_linear_forward(p, x_stream, 1, d, d, nullptr);
      cuda::flipout_linear_backward(LinearGradParams{p, d, d, d, d, d, d}, x_stream, 1, d, nullptr);
      cuda::local_reparam_linear_forward(p, x_stream, d, d, d, nullptr);
      cuda::local_reparam_linear_backward(LinearGradParams{p, d, d, d, d, d, d}, x_stream, d, d, nullptr);
    }
  }
  for (bool channels_last : {true, false}) {  // 5 million input channels: dx's 64-column tiles
    ConvParams p{};
    p.x = d, p.w_mu = d, p.w_rho = d, p.b_mu = d, p.b_rho = d;
    p.batch = 2, p.in_h = 3, p.in_w = 3, p.in_channels = 5000000;
    p.out_h = 3, p.out_w = 3, p.out_channels = 1;
    p.kernel_h = p.kernel_w = 1, p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
    p.groups = 1, p.channels_last = channels_last, p.has_bias = true;
    if (const char* error = cuda::conv_size_error(p)) {
      ++failures;
      std::printf("FAIL conv launch limits: %s\n", error);
      continue;
    }
    cuda::conv_forward(p, d, d, nullptr);
    cuda::conv_backward(ConvGradParams{p, d, d, d, d, d, d}, d, nullptr);
  }
  const LstmParams lstm{d, 2, 2, 3, 2200000, d, d, stream_from_seed(5, 6), d, d, stream_from_seed(7, 8), d, d};
  cuda::lstm_forward(lstm, LstmSaved{d, d, d}, d, d, d, d, nullptr);
  cuda::lstm_backward(LstmGradParams{lstm, LstmForwardResult{d, d, d, d}, d, d, d, d, d, d, d, d, d, d}, d, d, nullptr);
  emulation_check_only = false;
  std::printf("cuda_emulation: launch limits at large sizes: %d launches beyond them\n",
              emulated_limit_violations - violations_before);
}

}  // namespace
}  // namespace fusedbnn

int main() {
  using namespace fusedbnn;
  softplus_case();
  for (int offset : {0, 1}) {
    for (int64_t n : {0, 1, 3, 4, 5, 127, 1001, 4099}) gaussian_case(n, offset);
    // (rows, in, out): around the 32 / 64 / 256 tiles, both Linear plans (<= 64 rows fused).
    const int64_t shapes[][3] = {{1, 1, 1},    {1, 33, 17},   {2, 5, 3},    {5, 130, 257}, {32, 64, 256},
                                 {33, 70, 300}, {64, 40, 70}, {65, 40, 70}, {70, 100, 260}, {0, 16, 8},
                                 {7, 0, 5},    {3, 5, 0},     {4, 300, 9}};
    for (const auto& s : shapes) {
      for (bool bias : {false, true}) linear_case(s[0], s[1], s[2], bias, offset);
      linear_case(s[0], s[1], s[2], true, offset, true);
    }
  }
  estimator_cases();
  conv_cases();
  // (B, T, E, H): batch and steps 0, 1 and more, odd sizes, tiles of 16 / 32 / 64 rows and 64 columns
  // crossed (B 33, E 67, H 70: 4 H = 280), with and without a zero initial state, dz in the gates.
  const int64_t lstm_shapes[][4] = {{1, 1, 1, 1}, {3, 5, 7, 5},  {1, 5, 3, 17}, {0, 5, 7, 5}, {3, 0, 7, 5},
                                    {0, 0, 3, 2}, {3, 1, 1, 3},  {2, 3, 0, 4},  {33, 3, 67, 70}};
  for (const auto& s : lstm_shapes) {
    for (bool zero_state : {false, true}) lstm_case(s[0], s[1], s[2], s[3], zero_state, !zero_state, 0);
  }
  lstm_case(3, 4, 5, 9, false, false, 1);
  // The KL output and its gradient: steps, an empty batch, no steps, odd sizes across the tiles, an offset.
  for (const auto& s : {std::array<int64_t, 4>{3, 5, 7, 5}, {0, 2, 3, 4}, {2, 0, 3, 3}, {33, 3, 67, 70}}) {
    lstm_case(s[0], s[1], s[2], s[3], false, true, 0, true);
  }
  lstm_case(3, 4, 5, 9, true, false, 1, true);
  // The per-step products pick their tiles from the multiprocessor count: these counts reach every
  // choice in both directions at B 33, 4 H = 280.
  const std::string sms_before = std::getenv("CUDA_EMULATION_SMS") ? std::getenv("CUDA_EMULATION_SMS") : "3";
  for (const char* sms : {"5", "8", "12", "20"}) {
    setenv("CUDA_EMULATION_SMS", sms, 1);
    lstm_case(33, 3, 67, 70, false, true, 0);
  }
  setenv("CUDA_EMULATION_SMS", sms_before.c_str(), 1);
  embedding_cases();
  for (float max_norm : {0.0f, 0.01f}) embedding_bad_rows_case(max_norm);
  launch_limit_cases();
  failures += emulated_limit_violations;
  std::printf("cuda_emulation: %s (%d failures)\n", failures ? "FAILED" : "all kernels match", failures);
  return failures != 0;
}
