#include "linear.h"

#include <algorithm>

#include "gaussian.h"
#include "gemm.h"

namespace fusedbnn {

void linear_forward(const ParallelFor& pf, const LinearParams& p, float* w_scratch, float* b_scratch, float* y) {
  sample_gaussian(pf, p.w_stream, p.out * p.in, p.w_mu, p.w_rho, w_scratch);
  // y = x W^T
  gemm(pf, GemmArgs{p.rows, p.out, p.in, p.x, p.in, false, w_scratch, p.in, true, y, p.out});
  if (!p.has_bias || p.rows == 0) return;
  sample_gaussian(serial_for(), p.b_stream, p.out, p.b_mu, p.b_rho, b_scratch);
  pf(p.rows, p.out, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      float* row = y + r * p.out;
      for (int64_t o = 0; o < p.out; ++o) row[o] += b_scratch[o];
    }
  });
}

void linear_backward(const ParallelFor& pf, const LinearParams& p, const float* dy, float* w_scratch, float* dx,
                     float* dw_mu, float* dw_rho, float* db_mu, float* db_rho) {
  // dW = dy^T x is the gradient of mu; drho = dW * eps * sigmoid(rho), with W regenerated alongside.
  gemm(pf, GemmArgs{p.out, p.in, p.rows, dy, p.out, true, p.x, p.in, false, dw_mu, p.in});
  sample_gaussian_grad(pf, p.w_stream, p.out * p.in, dw_mu, p.w_mu, p.w_rho, dw_rho, w_scratch);
  // dx = dy W
  gemm(pf, GemmArgs{p.rows, p.in, p.out, dy, p.out, false, w_scratch, p.in, false, dx, p.in});
  if (!p.has_bias) return;
  // Column sums of dy, each column summed in row order.
  constexpr int64_t kColumns = 256;
  pf(ceil_div(p.out, kColumns), kColumns * std::max<int64_t>(p.rows, 1), [&](int64_t first, int64_t last) {
    const int64_t lo = first * kColumns, hi = std::min(p.out, last * kColumns);
    std::fill(db_mu + lo, db_mu + hi, 0.0f);
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* row = dy + r * p.out;
      for (int64_t o = lo; o < hi; ++o) db_mu[o] += row[o];
    }
  });
  sample_gaussian_grad(serial_for(), p.b_stream, p.out, db_mu, p.b_mu, p.b_rho, db_rho, nullptr);
}

}  // namespace fusedbnn
