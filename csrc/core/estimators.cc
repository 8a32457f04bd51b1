#include "estimators.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_features.h"
#include "gaussian.h"
#include "gemm.h"

namespace fusedbnn {

const VarianceKernels& scalar_variance_kernels();
#if defined(FUSEDBNN_HAVE_AVX2)
const VarianceKernels& avx2_variance_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
const VarianceKernels& avx512_variance_kernels();
#endif

const VarianceKernels& best_variance_kernels() {
  switch (active_isa()) {
#if defined(FUSEDBNN_HAVE_AVX512)
    case Isa::kAvx512:
      return avx512_variance_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
    case Isa::kAvx2:
      return avx2_variance_kernels();
#endif
    default:
      return scalar_variance_kernels();
  }
}

namespace {

// Rows of a [rows, width] elementwise pass per parallel unit.
int64_t rows_per_unit(int64_t width) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(width, 1)); }

// Calls fn(r0, r1) over blocks of rows of a [rows, width] elementwise pass.
template <class Fn>
void for_row_blocks(const ParallelFor& pf, int64_t rows, int64_t width, const Fn& fn) {
  const int64_t block = rows_per_unit(width);
  pf(ceil_div(rows, block), 4 * block * std::max<int64_t>(width, 1), [&](int64_t first, int64_t last) {
    for (int64_t u = first; u < last; ++u) fn(u * block, std::min(rows, (u + 1) * block));
  });
}

// signs[e, :] of the sign stream k over a [examples, width] tensor.
std::vector<float> signs(const ParallelFor& pf, const NoiseStream& x_stream, EstimatorStream k, int64_t examples,
                         int64_t width) {
  const NoiseStream s = derived_stream(x_stream, k);
  std::vector<float> out(examples * width);
  for_row_blocks(pf, examples, width,
                 [&](int64_t e0, int64_t e1) { fill_signs(s, e0 * width, e1 * width, out.data() + e0 * width); });
  return out;
}

// a[r, :] * signs[r / rows_per_example, :] over a [rows, width] tensor: every row of an example
// takes the example's signs.
std::vector<float> signed_rows(const ParallelFor& pf, const float* a, const std::vector<float>& signs, int64_t rows,
                               int64_t width, int64_t rows_per_example) {
  std::vector<float> out(rows * width);
  for_row_blocks(pf, rows, width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = signs.data() + r / rows_per_example * width;
      for (int64_t i = 0; i < width; ++i) out[r * width + i] = a[r * width + i] * s[i];
    }
  });
  return out;
}

// a[i] * b[i] over a [rows, width] tensor.
std::vector<float> product(const ParallelFor& pf, const float* a, const float* b, int64_t rows, int64_t width) {
  std::vector<float> out(rows * width);
  for_row_blocks(pf, rows, width, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0 * width; i < r1 * width; ++i) out[i] = a[i] * b[i];
  });
  return out;
}

// The product with the means, C = x mu^T (forward) or dy mu (dx), over the whole batch.
void mean_product(const ParallelFor& pf, const LinearParams& p, const float* a, bool backward, float* c) {
  if (backward) {
    gemm(pf, GemmArgs{p.rows, p.in, p.out, a, p.out, false, p.w_mu, p.in, false, c, p.in});
  } else {
    gemm(pf, GemmArgs{p.rows, p.out, p.in, a, p.in, false, p.w_mu, p.in, true, c, p.out});
  }
}

// Zeroes the gradients of an op with nothing to contract; false when there is work to do.
bool zero_grads_if_empty(const LinearGradParams& g) {
  if (g.in == 0) return true;
  if (g.rows > 0 && g.out > 0) return false;
  std::fill(g.dw_mu, g.dw_mu + g.out * g.in, 0.0f);
  std::fill(g.dw_rho, g.dw_rho + g.out * g.in, 0.0f);
  std::fill(g.dx, g.dx + g.rows * g.in, 0.0f);
  return true;
}

// dmu = dy^T x, the same for every estimator.
void mean_grad(const ParallelFor& pf, const LinearGradParams& g) {
  gemm(pf, GemmArgs{g.out, g.in, g.rows, g.dy, g.out, true, g.x, g.in, false, g.dw_mu, g.in});
}

}  // namespace

void fill_signs(const NoiseStream& s, int64_t begin, int64_t end, float* out) {
  for (int64_t i = begin; i < end;) {
    float group[4];
    sign_group(s, static_cast<uint64_t>(i) / 4, group);
    for (int j = static_cast<int>(i % 4); j < 4 && i < end; ++j, ++i) out[i - begin] = group[j];
  }
}

void flipout_linear_forward(const ParallelFor& pf, const LinearParams& p, const NoiseStream& x_stream,
                            int64_t rows_per_example, float* y) {
  if (p.rows == 0 || p.out == 0) return;
  mean_product(pf, p, p.x, false, y);
  const int64_t examples = p.rows / rows_per_example;
  const std::vector<float> s_in = signs(pf, x_stream, EstimatorStream::kSignsIn, examples, p.in);
  const std::vector<float> s_out = signs(pf, x_stream, EstimatorStream::kSignsOut, examples, p.out);
  const std::vector<float> x_signed = signed_rows(pf, p.x, s_in, p.rows, p.in, rows_per_example);
  const GaussianKernels& k = best_kernels();
  const int64_t tile_rows = forward_rows_per_tile(p);
  pf(ceil_div(p.out, tile_rows), 2 * tile_rows * p.in * (p.rows + 20), [&](int64_t first, int64_t last) {
    // sigma * eps is fma(sigma, eps, 0): the sampling kernel with zero means.
    const std::vector<float> zeros(tile_rows * p.in, 0.0f);
    std::vector<float> perturbation(tile_rows * p.in), product(p.rows * tile_rows);
    for (int64_t t = first; t < last; ++t) {
      const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0), begin = o0 * p.in;
      k.sample(p.w_stream, begin, begin + rows * p.in, zeros.data(), p.w_rho + begin, perturbation.data());
      gemm(serial_for(), GemmArgs{p.rows, rows, p.in, x_signed.data(), p.in, false, perturbation.data(), p.in, true,
                                  product.data(), rows});
      for (int64_t r = 0; r < p.rows; ++r) {
        float* y_row = y + r * p.out + o0;
        const float* s_row = s_out.data() + r / rows_per_example * p.out + o0;
        for (int64_t o = 0; o < rows; ++o) y_row[o] += product[r * rows + o] * s_row[o];
      }
    }
  });
  if (p.has_bias) add_sampled_bias(pf, p, y);
}

// With dy_s = dy * s_out and x_s = x * s_in:
//   dx = dy mu + (dy_s (sigma * eps)) * s_in,  dmu = dy^T x,  drho = (dy_s^T x_s) * eps * sigmoid(rho).
void flipout_linear_backward(const ParallelFor& pf, const LinearGradParams& g, const NoiseStream& x_stream,
                             int64_t rows_per_example) {
  if (g.has_bias) sampled_bias_backward(pf, g);
  if (zero_grads_if_empty(g)) return;
  mean_grad(pf, g);
  mean_product(pf, g, g.dy, true, g.dx);
  const int64_t examples = g.rows / rows_per_example;
  const std::vector<float> s_in = signs(pf, x_stream, EstimatorStream::kSignsIn, examples, g.in);
  const std::vector<float> s_out = signs(pf, x_stream, EstimatorStream::kSignsOut, examples, g.out);
  const std::vector<float> x_signed = signed_rows(pf, g.x, s_in, g.rows, g.in, rows_per_example);
  const std::vector<float> dy_signed = signed_rows(pf, g.dy, s_out, g.rows, g.out, rows_per_example);
  const GaussianKernels& k = best_kernels();
  const int64_t tile_cols = backward_columns_per_tile(g);
  pf(ceil_div(g.in, tile_cols), 5 * tile_cols * g.out * (g.rows + 10), [&](int64_t first, int64_t last) {
    const std::vector<float> zeros(tile_cols, 0.0f);
    std::vector<float> dperturbation(g.out * tile_cols), perturbation(g.out * tile_cols), dx_tile(g.rows * tile_cols);
    for (int64_t t = first; t < last; ++t) {
      const int64_t i0 = t * tile_cols, cols = std::min(tile_cols, g.in - i0);
      gemm(serial_for(), GemmArgs{g.out, cols, g.rows, dy_signed.data(), g.out, true, x_signed.data() + i0, g.in, false,
                                  dperturbation.data(), cols});
      for (int64_t o = 0; o < g.out; ++o) {
        const int64_t begin = o * g.in + i0;
        k.sample_grad(g.w_stream, begin, begin + cols, dperturbation.data() + o * cols, zeros.data(), g.w_rho + begin,
                      g.dw_rho + begin, perturbation.data() + o * cols);
      }
      gemm(serial_for(), GemmArgs{g.rows, cols, g.out, dy_signed.data(), g.out, false, perturbation.data(), cols, false,
                                  dx_tile.data(), cols});
      for (int64_t r = 0; r < g.rows; ++r) {
        float* dx_row = g.dx + r * g.in + i0;
        const float* s_row = s_in.data() + r / rows_per_example * g.in + i0;
        for (int64_t i = 0; i < cols; ++i) dx_row[i] += dx_tile[r * cols + i] * s_row[i];
      }
    }
  });
}

namespace {

// eps_out[r, :] for rows [r0, r1), the output noise of local reparameterization.
void fill_output_noise(const NoiseStream& s, int64_t r0, int64_t r1, int64_t out, float* eps) {
  best_kernels().fill_normal(s, r0 * out, r1 * out, eps);
}

}  // namespace

void local_reparam_linear_forward(const ParallelFor& pf, const LinearParams& p, const NoiseStream& x_stream, float* y,
                                  float* y_std) {
  if (p.rows == 0 || p.out == 0) return;
  mean_product(pf, p, p.x, false, y);
  const std::vector<float> x_squared = product(pf, p.x, p.x, p.rows, p.in);
  const int64_t tile_rows = forward_rows_per_tile(p);
  pf(ceil_div(p.out, tile_rows), 2 * tile_rows * p.in * (p.rows + 20), [&](int64_t first, int64_t last) {
    std::vector<float> variance(tile_rows * p.in);
    for (int64_t t = first; t < last; ++t) {
      const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0);
      best_variance_kernels().variance(rows * p.in, p.w_rho + o0 * p.in, variance.data());
      gemm(serial_for(),
           GemmArgs{p.rows, rows, p.in, x_squared.data(), p.in, false, variance.data(), p.in, true, y_std + o0, p.out});
    }
  });
  const NoiseStream s = derived_stream(x_stream, EstimatorStream::kOutputNoise);
  for_row_blocks(pf, p.rows, p.out, [&](int64_t r0, int64_t r1) {
    std::vector<float> eps((r1 - r0) * p.out);
    fill_output_noise(s, r0, r1, p.out, eps.data());
    for (int64_t i = r0 * p.out; i < r1 * p.out; ++i) {
      y_std[i] = std::sqrt(y_std[i]);
      y[i] += y_std[i] * eps[i - r0 * p.out];
    }
  });
  if (p.has_bias) add_sampled_bias(pf, p, y);
}

// With dvar = dy * eps_out / (2 y_std) (0 where y_std is 0):
//   dx = dy mu + 2 x (dvar sigma^2),  dmu = dy^T x,  drho = (dvar^T x^2) * 2 sigma * sigmoid(rho).
void local_reparam_linear_backward(const ParallelFor& pf, const LinearGradParams& g, const NoiseStream& x_stream,
                                   const float* y_std) {
  if (g.has_bias) sampled_bias_backward(pf, g);
  if (zero_grads_if_empty(g)) return;
  mean_grad(pf, g);
  mean_product(pf, g, g.dy, true, g.dx);
  const std::vector<float> x_squared = product(pf, g.x, g.x, g.rows, g.in);
  std::vector<float> dvariance(g.rows * g.out);
  const NoiseStream s = derived_stream(x_stream, EstimatorStream::kOutputNoise);
  for_row_blocks(pf, g.rows, g.out, [&](int64_t r0, int64_t r1) {
    float* d = dvariance.data() + r0 * g.out;
    fill_output_noise(s, r0, r1, g.out, d);
    for (int64_t i = r0 * g.out; i < r1 * g.out; ++i) {
      const float scale = y_std[i];
      d[i - r0 * g.out] = scale == 0.0f ? 0.0f : g.dy[i] * d[i - r0 * g.out] / (2.0f * scale);
    }
  });
  const VarianceKernels& k = best_variance_kernels();
  const int64_t tile_cols = backward_columns_per_tile(g);
  pf(ceil_div(g.in, tile_cols), 5 * tile_cols * g.out * (g.rows + 10), [&](int64_t first, int64_t last) {
    std::vector<float> dvar_w(g.out * tile_cols), variance(g.out * tile_cols), dx_tile(g.rows * tile_cols);
    for (int64_t t = first; t < last; ++t) {
      const int64_t i0 = t * tile_cols, cols = std::min(tile_cols, g.in - i0);
      gemm(serial_for(), GemmArgs{g.out, cols, g.rows, dvariance.data(), g.out, true, x_squared.data() + i0, g.in,
                                  false, dvar_w.data(), cols});
      for (int64_t o = 0; o < g.out; ++o) {
        const int64_t begin = o * g.in + i0;
        k.variance_grad(cols, g.w_rho + begin, dvar_w.data() + o * cols, variance.data() + o * cols, g.dw_rho + begin);
      }
      gemm(serial_for(), GemmArgs{g.rows, cols, g.out, dvariance.data(), g.out, false, variance.data(), cols, false,
                                  dx_tile.data(), cols});
      for (int64_t r = 0; r < g.rows; ++r) {
        float* dx_row = g.dx + r * g.in + i0;
        const float* x_row = g.x + r * g.in + i0;
        for (int64_t i = 0; i < cols; ++i) dx_row[i] += 2.0f * x_row[i] * dx_tile[r * cols + i];
      }
    }
  });
}

}  // namespace fusedbnn
