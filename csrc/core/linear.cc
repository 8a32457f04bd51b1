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
// Each tile's product packs the whole batch again: from 256 rows of batch on they are twice the base
// size (B=512, 1024 -> 1024: 256 rows of W instead of 128, the forward ~4% faster with AVX2).
int64_t forward_rows_per_tile(const LinearParams& p) {
  const int64_t floats = std::max(tile_floats(p), p.rows * 512);
  return std::max<int64_t>(1, std::min<int64_t>(p.out, floats / std::max<int64_t>(p.in, 1)));
}

// Backward tiles: blocks of whole rows of W, like the forward's but 4x larger (each also runs a
// product dy[:, rows] W[rows] over the whole x width, which wants a longer contraction).
int64_t backward_rows_per_tile(const LinearParams& p) {
  return std::max<int64_t>(1, std::min<int64_t>(p.out, 4 * tile_floats(p) / std::max<int64_t>(p.in, 1)));
}

// The estimators' backward passes (estimators.cc) tile W by columns instead: input features, a
// multiple of 64, sized for the cache like the forward's tiles.
int64_t backward_columns_per_tile(const LinearParams& p) {
  const int64_t columns = std::max<int64_t>(64, tile_floats(p) / std::max<int64_t>(p.out, 1) / 64 * 64);
  return std::min(p.in, columns);
}

// dx sums one product per row tile. The tiles are split into a fixed number of groups (the sizes
// alone decide it), each summing its tiles in order into its own dx-sized partial, about 8 MB of
// partials at most; the partials are then added in group order: results do not depend on threads.
int64_t backward_groups(const LinearParams& p, int64_t tiles) {
  const int64_t partial_bytes = std::max<int64_t>(1, p.rows * p.in * 4);
  return std::max<int64_t>(1, std::min<int64_t>({tiles, 8, (8 << 20) / partial_bytes}));
}

double add_sampled_bias(const ParallelFor& pf, const LinearParams& p, float* y) {
  std::vector<float> b(p.out);
  double kl = 0.0;
  if (p.with_kl) {
    kl = best_kernels().sample_kl(p.b_stream, 0, p.out, p.b_mu, p.b_rho, p.b_prior, b.data());
  } else {
    sample_gaussian(serial_for(), p.b_stream, p.out, p.b_mu, p.b_rho, b.data());
  }
  pf(p.rows, p.out, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      float* row = y + r * p.out;
      for (int64_t o = 0; o < p.out; ++o) row[o] += b[o];
    }
  });
  return kl;
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
  if (p.dkl != nullptr) {
    best_kernels().sample_grad_kl(p.b_stream, 0, p.out, p.db_mu, p.b_mu, p.b_rho, p.b_prior, *p.dkl, p.db_mu, p.db_rho,
                                  nullptr);
  } else {
    sample_gaussian_grad(serial_for(), p.b_stream, p.out, p.db_mu, p.b_mu, p.b_rho, p.db_rho, nullptr);
  }
}

void linear_forward(const ParallelFor& pf, const LinearParams& p, float* y, float* kl) {
  const GaussianKernels& k = best_kernels();
  // Without rows the weights are still sampled for the KL.
  if (p.out == 0 || (p.rows == 0 && !p.with_kl)) {
    if (p.with_kl) *kl = 0.0f;
    return;
  }
  const int64_t tile_rows = forward_rows_per_tile(p), tiles = ceil_div(p.out, tile_rows);
  // The KL of each tile, summed in tile order afterwards: the same total whatever the threads.
  std::vector<double> tile_kl(p.with_kl ? tiles : 0);
  pf(tiles, 2 * tile_rows * p.in * (p.rows + 20), [&](int64_t first, int64_t last) {
    std::vector<float> w(tile_rows * p.in);
    for (int64_t t = first; t < last; ++t) {
      const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0), begin = o0 * p.in;
      if (p.with_kl) {
        tile_kl[t] = k.sample_kl(p.w_stream, begin, begin + rows * p.in, p.w_mu + begin, p.w_rho + begin,
                                 p.w_prior.from(begin), w.data());
      } else {
        k.sample(p.w_stream, begin, begin + rows * p.in, p.w_mu + begin, p.w_rho + begin, w.data());
      }
      // y[:, o0:o0+rows] = x W[o0:o0+rows]^T
      if (p.rows > 0) gemm_serial(GemmArgs{p.rows, rows, p.in, p.x, p.in, false, w.data(), p.in, true, y + o0, p.out});
    }
  });
  double total = 0.0;
  for (double t : tile_kl) total += t;
  if (p.has_bias) total += add_sampled_bias(pf, p, y);
  if (p.with_kl) *kl = static_cast<float>(total);
}

namespace {

// dx (floats) above which the backward splits each tile's stages over the threads rather than
// summing groups of tiles into dx-sized partials (1 MB: half the L2 of the machines measured).
constexpr int64_t kLargeDx = 1 << 18;

// drho = dW * eps * sigmoid(rho) over the flat range [begin, end) of W, regenerating W there into w
// (and the KL's terms with dkl); dW is read from dw_mu.
void regenerate_noise(const LinearGradParams& p, int64_t begin, int64_t end, float* w) {
  const GaussianKernels& k = best_kernels();
  if (p.dkl != nullptr) {
    k.sample_grad_kl(p.w_stream, begin, end, p.dw_mu + begin, p.w_mu + begin, p.w_rho + begin, p.w_prior.from(begin),
                     *p.dkl, p.dw_mu + begin, p.dw_rho + begin, w);
  } else {
    k.sample_grad(p.w_stream, begin, end, p.dw_mu + begin, p.w_mu + begin, p.w_rho + begin, p.dw_rho + begin, w);
  }
}

// Small dx (small batch): the tiles are split into groups (backward_groups), each summing its
// tiles' dx products into its own dx-sized partial, added in group order at the end. gemm's cuts of
// the tiles' products cost nothing measurable here (B=32: the cut-off operand is a few KB of dy).
void backward_in_groups(const ParallelFor& pf, const LinearGradParams& p, int64_t tile_rows, int64_t tiles) {
  const int64_t groups = backward_groups(p, tiles), dx_size = p.rows * p.in;
  std::vector<float> partials((groups - 1) * dx_size);
  const int64_t cost = 4 * ceil_div(tiles, groups) * tile_rows * p.in * (p.rows + 10);
  pf(groups, cost, [&](int64_t first, int64_t last) {
    std::vector<float> w(tile_rows * p.in);
    for (int64_t g = first; g < last; ++g) {
      float* dx_sum = g == 0 ? p.dx : partials.data() + (g - 1) * dx_size;
      const int64_t t0 = g * tiles / groups, t1 = (g + 1) * tiles / groups;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0), begin = o0 * p.in;
        // dW[o0:o0+rows] = dy[:, o0:o0+rows]^T x is the gradient of mu.
        gemm(serial_for(),
             GemmArgs{rows, p.in, p.rows, p.dy + o0, p.out, true, p.x, p.in, false, p.dw_mu + begin, p.in});
        regenerate_noise(p, begin, begin + rows * p.in, w.data());
        // dx (+)= dy[:, o0:o0+rows] W[o0:o0+rows]
        gemm(serial_for(),
             GemmArgs{p.rows, p.in, rows, p.dy + o0, p.out, false, w.data(), p.in, false, dx_sum, p.in, t > t0});
      }
    }
  });
  if (groups == 1) return;
  constexpr int64_t kSlice = 4096;
  pf(ceil_div(dx_size, kSlice), kSlice * groups, [&](int64_t first, int64_t last) {
    for (int64_t g = 1; g < groups; ++g) {
      const float* partial = partials.data() + (g - 1) * dx_size;
      for (int64_t i = first * kSlice; i < std::min(dx_size, last * kSlice); ++i) p.dx[i] += partial[i];
    }
  });
}

// Large dx (large batch): the tiles run one after another and each of their three stages is split
// over the threads, so dx accumulates in place. The partials cost more there than the stages'
// synchronisation and gemm's cuts (B=512, 1024 -> 1024, AVX2, one thread: ~1-2 ms of ~29), and
// each thread gets several pieces per stage instead of one group.
void backward_in_stages(const ParallelFor& pf, const LinearGradParams& p, int64_t tile_rows, int64_t tiles) {
  // The products are cut into pieces of at least 256 columns of dW and dx: each piece packs the
  // tile's dy again, which 256 columns amortise.
  constexpr int64_t kMinPiece = 256, kNoiseRows = 32;
  std::vector<float> w(tile_rows * p.in);
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t o0 = t * tile_rows, rows = std::min(tile_rows, p.out - o0), begin = o0 * p.in;
    gemm(pf, GemmArgs{rows, p.in, p.rows, p.dy + o0, p.out, true, p.x, p.in, false, p.dw_mu + begin, p.in, false,
                      kMinPiece});
    pf(ceil_div(rows, kNoiseRows), kNoiseRows * p.in * 16, [&](int64_t first, int64_t last) {
      const int64_t r0 = first * kNoiseRows, r1 = std::min(rows, last * kNoiseRows);
      regenerate_noise(p, begin + r0 * p.in, begin + r1 * p.in, w.data() + r0 * p.in);
    });
    gemm(pf,
         GemmArgs{p.rows, p.in, rows, p.dy + o0, p.out, false, w.data(), p.in, false, p.dx, p.in, t > 0, kMinPiece});
  }
}

}  // namespace

void linear_backward(const ParallelFor& pf, const LinearGradParams& p) {
  if (p.has_bias) sampled_bias_backward(pf, p);
  if (p.in == 0) return;
  if (p.rows == 0 || p.out == 0) {
    if (p.dkl != nullptr) {
      gaussian_kl_grad(pf, p.w_stream, p.out * p.in, p.w_mu, p.w_rho, p.w_prior, *p.dkl, p.dw_mu, p.dw_rho);
    } else {
      std::fill(p.dw_mu, p.dw_mu + p.out * p.in, 0.0f);
      std::fill(p.dw_rho, p.dw_rho + p.out * p.in, 0.0f);
    }
    std::fill(p.dx, p.dx + p.rows * p.in, 0.0f);
    return;
  }
  // Row tiles keep every pass contiguous: with tiles of columns, each row of a tile was a strided
  // access into dW, mu, rho and drho (B=32, 4096 -> 4096, one core: 137 -> 76 ms).
  const int64_t tile_rows = backward_rows_per_tile(p), tiles = ceil_div(p.out, tile_rows);
  // The sizes alone choose: results do not depend on the threads either way.
  if (p.rows * p.in > kLargeDx) {
    backward_in_stages(pf, p, tile_rows, tiles);
  } else {
    backward_in_groups(pf, p, tile_rows, tiles);
  }
}

}  // namespace fusedbnn
