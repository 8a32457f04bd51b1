#include "linear.h"

#include <algorithm>
#include <vector>

#include "gaussian.h"
#include "gemm.h"

namespace fusedbnn {
namespace {

// Weight tiles are sampled into a cache-sized buffer and consumed at once, so the sampled weight
// never exists whole and no weight-sized temporary is allocated. Each tile re-reads the whole
// batch, so tiles grow with the batch: about 256 KB at small batch.
int64_t tile_floats(const LinearParams& p) { return std::max<int64_t>(1 << 16, p.rows * 256); }

}  // namespace

// Forward tiles: blocks of whole rows of W (output features), contiguous in the noise sequence.
int64_t forward_rows_per_tile(const LinearParams& p) {
  return std::max<int64_t>(1, std::min<int64_t>(p.out, tile_floats(p) / std::max<int64_t>(p.in, 1)));
}

// Backward tiles: blocks of columns of W (input features), a multiple of the noise block.
int64_t backward_columns_per_tile(const LinearParams& p) {
  const int64_t columns = std::max<int64_t>(64, tile_floats(p) / std::max<int64_t>(p.out, 1) / 64 * 64);
  return std::min(p.in, columns);
}

void add_sampled_bias(const ParallelFor& pf, const LinearParams& p, float* y) {
  std::vector<float> b(p.out);
  sample_gaussian(serial_for(), p.b_stream, p.out, p.b_mu, p.b_rho, b.data());
  pf(p.rows, p.out, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      float* row = y + r * p.out;
      for (int64_t o = 0; o < p.out; ++o) row[o] += b[o];
    }
  });
}

// db_mu = column sums of dy (each in row order), db_rho from the regenerated bias noise.
void sampled_bias_backward(const ParallelFor& pf, const LinearGradParams& p) {
  constexpr int64_t kColumns = 256;
  pf(ceil_div(p.out, kColumns), kColumns * std::max<int64_t>(p.rows, 1), [&](int64_t first, int64_t last) {
    const int64_t lo = first * kColumns, hi = std::min(p.out, last * kColumns);
    std::fill(p.db_mu + lo, p.db_mu + hi, 0.0f);
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* row = p.dy + r * p.out;
      for (int64_t o = lo; o < hi; ++o) p.db_mu[o] += row[o];
    }
  });
  sample_gaussian_grad(serial_for(), p.b_stream, p.out, p.db_mu, p.b_mu, p.b_rho, p.db_rho, nullptr);
}

void linear_forward(const ParallelFor& pf, const LinearParams& p, float* y) {
  if (p.rows == 0 || p.out == 0) return;
  const GaussianKernels& k = best_kernels();
  const int64_t tile_rows = forward_rows_per_tile(p);
  pf(ceil_div(p.out, tile_rows), 2 * tile_rows * p.in * (p.rows + 20), [&](int64_t first, int64_t last) {
    std::vector<float> w(tile_rows * p.in);
    for (int64_t t = first; t < last; ++t) {
      const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0), begin = o0 * p.in;
      k.sample(p.w_stream, begin, begin + rows * p.in, p.w_mu + begin, p.w_rho + begin, w.data());
      // y[:, o0:o0+rows] = x W[o0:o0+rows]^T
      gemm(serial_for(), GemmArgs{p.rows, rows, p.in, p.x, p.in, false, w.data(), p.in, true, y + o0, p.out});
    }
  });
  if (p.has_bias) add_sampled_bias(pf, p, y);
}

void linear_backward(const ParallelFor& pf, const LinearGradParams& p) {
  if (p.has_bias) sampled_bias_backward(pf, p);
  if (p.in == 0) return;
  if (p.rows == 0 || p.out == 0) {
    std::fill(p.dw_mu, p.dw_mu + p.out * p.in, 0.0f);
    std::fill(p.dw_rho, p.dw_rho + p.out * p.in, 0.0f);
    std::fill(p.dx, p.dx + p.rows * p.in, 0.0f);
    return;
  }
  const GaussianKernels& k = best_kernels();
  const int64_t tile_cols = backward_columns_per_tile(p);
  pf(ceil_div(p.in, tile_cols), 4 * tile_cols * p.out * (p.rows + 10), [&](int64_t first, int64_t last) {
    std::vector<float> w(p.out * tile_cols);
    for (int64_t t = first; t < last; ++t) {
      const int64_t i0 = t * tile_cols, cols = std::min(tile_cols, p.in - i0);
      // dW[:, i0:i0+cols] = dy^T x[:, i0:i0+cols] is the gradient of mu.
      gemm(serial_for(), GemmArgs{p.out, cols, p.rows, p.dy, p.out, true, p.x + i0, p.in, false, p.dw_mu + i0, p.in});
      // drho = dW * eps * sigmoid(rho), regenerating the tile of W alongside.
      for (int64_t o = 0; o < p.out; ++o) {
        const int64_t begin = o * p.in + i0;
        k.sample_grad(p.w_stream, begin, begin + cols, p.dw_mu + begin, p.w_mu + begin, p.w_rho + begin,
                      p.dw_rho + begin, w.data() + o * cols);
      }
      // dx[:, i0:i0+cols] = dy W[:, i0:i0+cols]
      gemm(serial_for(), GemmArgs{p.rows, cols, p.out, p.dy, p.out, false, w.data(), cols, false, p.dx + i0, p.in});
    }
  });
}

}  // namespace fusedbnn
