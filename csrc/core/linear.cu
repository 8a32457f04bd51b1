// CUDA Bayesian linear layer. Two tiled kernels do the work:
// - product_kernel: C[r, n] = sum_c A[r, c] Wt(c, n) over one slice of the contraction, with
//   Wt(c, n) = W[n, c] (forward, A = x) or W[c, n] (dx, A = dy). W tiles are sampled from mu / rho as
//   they are staged in shared memory (or read from a sampled copy at large batch).
// - weight_grad_kernel: dW = dy^T x per 64 x 64 tile, with the sampling gradient as its epilogue:
//   dw_mu = dW, dw_rho = dW * eps * sigmoid(rho), eps regenerated in registers.
// - fused_backward_kernel (up to kFusedMaxRows rows): the weight gradient's tiles, whose epilogue
//   also keeps the sampled W tile for dx = dy W: one pass over W and its noise for the backward.
#include "cuda_common.cuh"
#include "gaussian_cuda.h"
#include "linear_cuda.h"

namespace fusedbnn {
namespace cuda {
namespace {

constexpr int kTileN = 256;  // output columns per block: 64 threads x 4
// Contraction elements per shared-memory stage: 8, so that the next stage's loads fit in registers
// beside the accumulators (at 16 and 32 the 16-row kernels spill: ptxas -v, benchmarks/NOTES.md).
constexpr int kTileC = 8;
constexpr int kRunsPerThread = kTileC * kTileN / 4 / kThreads;  // runs of four W elements a thread stages

struct ProductArgs {
  const float* a;  // [rows, contraction], row stride lda
  int64_t rows, lda, contraction, cols;
  const float* w_mu;   // [out, in] row-major; the sampled W itself when not sampling
  const float* w_rho;  // unused when not sampling
  int64_t in;          // W's row length
  NoiseStream stream;
  bool transposed;    // Wt(c, n) = W[n, c]
  bool w_aligned;     // w_mu and w_rho are 16-byte aligned
  int64_t split_len;  // contraction elements per blockIdx.z (a multiple of kTileC)
  int64_t row_tiles;  // the first axis of the tile_grid
  float* out;         // [splits, rows, cols]
};

// Elements flat .. flat + 3 of a, and of b when set, those of the first `count` (the others stay as
// they are): one 16-byte load each where `vector` (aligned, all four inside).
__device__ __forceinline__ void load_run(const float* a, const float* b, int64_t flat, int64_t count, bool vector,
                                         float va[4], float vb[4]) {
  if (vector) {
    load4(a + flat, va);
    if (b != nullptr) load4(b + flat, vb);
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j < count) {
      va[j] = a[flat + j];
      if (b != nullptr) vb[j] = b[flat + j];
    }
  }
}

// Run k of a thread's W runs in the stage at step c0: its first element's step c and column n in
// the tile, and that element's row and column in W. Transposed, W's rows are the output columns n
// and a run lies along c (kTileC / 4 threads read a row's kTileC elements); else W's rows are the
// steps c and a run lies along n (a warp reads 128 consecutive elements). Splits are whole stages,
// so only the last split's last stage reaches past the contraction, where W's edges zero the runs.
struct WRun {
  int c, n;
  int64_t row, col;
  __device__ WRun(const ProductArgs& p, int k, int64_t c0, int64_t n0) {
    const int q = threadIdx.x + k * kThreads;
    c = p.transposed ? 4 * (q % (kTileC / 4)) : q / (kTileN / 4);
    n = p.transposed ? q / (kTileC / 4) : 4 * (q % (kTileN / 4));
    row = p.transposed ? n0 + n : c0 + c;
    col = p.transposed ? c0 + c : n0 + n;
  }
};

// Whether a run holds elements of W.
__device__ __forceinline__ bool in_w(const ProductArgs& p, int64_t out_rows, const WRun& r) {
  return r.row < out_rows && r.col < p.in;
}

// mu (and rho when sampling) of a run of four consecutive elements of W: zero where it holds none.
template <bool kSample>
__device__ __forceinline__ void fetch_w4(const ProductArgs& p, int64_t out_rows, const WRun& r, float mu[4],
                                         float rho[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) mu[j] = rho[j] = 0.0f;
  if (!in_w(p, out_rows, r)) return;
  const int64_t flat = r.row * p.in + r.col;
  const bool vector = p.w_aligned && flat % 4 == 0 && r.col + 4 <= p.in;
  load_run(p.w_mu, kSample ? p.w_rho : nullptr, flat, p.in - r.col, vector, mu, rho);
}

// The W of a fetched run: sampled from its mu and rho (zero where it holds none), or mu itself.
template <bool kSample>
__device__ __forceinline__ void w4(const ProductArgs& p, int64_t out_rows, const WRun& r, const float mu[4],
                                   const float rho[4], float w[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = kSample ? 0.0f : mu[j];
  if (!kSample || !in_w(p, out_rows, r)) return;
  float e[4];
  eps4(p.stream, static_cast<uint64_t>(r.row * p.in + r.col), e);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (r.col + j < p.in) w[j] = sample_one(mu[j], rho[j], e[j]);
  }
}

// The column where element (c, n) of a W tile is kept: n xor-ed with a multiple of 128 / kTileC by
// c's group of 4 steps. A warp's transposed runs (128 / kTileC columns n, kTileC / 4 runs of 4 steps
// c) then store to 32 different banks instead of 128 / kTileC, and every aligned group of 4 columns
// stays one 16-byte load.
__device__ __forceinline__ int w_column(int c, int n) { return n ^ ((128 / kTileC) * ((c / 4) % (kTileC / 4))); }

// 256 threads: ty = threadIdx.x / 64 owns rows [ty * kRowsPerThread, +kRowsPerThread) of the block's
// row tile, tx = threadIdx.x % 64 owns columns [4 tx, 4 tx + 4) of its column tile. The next stage's
// global loads (its W runs' mu and rho, its A elements) are issued before the current stage's
// arithmetic, so that they overlap it; sampling W happens as a stage is stored to shared memory.
template <int kRowsPerThread, bool kSample>
__global__ void __launch_bounds__(kThreads, 2) product_kernel(ProductArgs p, int64_t out_rows) {
  constexpr int kTileRows = 4 * kRowsPerThread;
  constexpr int kAPerThread = kTileRows * kTileC / kThreads;
  __shared__ __align__(16) float a_tile[kTileC][kTileRows];
  __shared__ __align__(16) float w_tile[kTileC][kTileN];
  const int tx = threadIdx.x % 64, ty = threadIdx.x / 64;
  const int64_t r0 = first_tile(p.row_tiles) * kTileRows, n0 = second_tile(p.row_tiles) * kTileN;
  const int64_t c_begin = int64_t{blockIdx.z} * p.split_len;
  const int64_t c_end = c_begin + p.split_len < p.contraction ? c_begin + p.split_len : p.contraction;

  // A elements: rows fastest across threads (conflict-free transposed stores; A is small).
  float a_next[kAPerThread];
  float mu_next[kRunsPerThread][4], rho_next[kRunsPerThread][4];
  const auto fetch = [&](int64_t c0) {
#pragma unroll
    for (int k = 0; k < kAPerThread; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      const int r = idx % kTileRows, c = idx / kTileRows;
      a_next[k] = r0 + r < p.rows && c0 + c < c_end ? p.a[(r0 + r) * p.lda + c0 + c] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kRunsPerThread; ++k) {
      fetch_w4<kSample>(p, out_rows, WRun(p, k, c0, n0), mu_next[k], rho_next[k]);
    }
  };

  float acc[kRowsPerThread][4];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  }

  fetch(c_begin);
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kTileC) {
#pragma unroll
    for (int k = 0; k < kAPerThread; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      a_tile[idx / kTileRows][idx % kTileRows] = a_next[k];
    }
#pragma unroll
    for (int k = 0; k < kRunsPerThread; ++k) {
      const WRun run(p, k, c0, n0);
      float w[4];
      w4<kSample>(p, out_rows, run, mu_next[k], rho_next[k], w);
      if (p.transposed) {
#pragma unroll
        for (int j = 0; j < 4; ++j) w_tile[run.c + j][w_column(run.c, run.n)] = w[j];
      } else {
        store4(&w_tile[run.c][w_column(run.c, run.n)], w);
      }
    }
    __syncthreads();
    if (c0 + kTileC < c_end) fetch(c0 + kTileC);
#pragma unroll
    for (int c = 0; c < kTileC; ++c) {
      float xv[kRowsPerThread], wv[4];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; i += 4) load4(&a_tile[c][ty * kRowsPerThread + i], xv + i);
      load4(&w_tile[c][w_column(c, 4 * tx)], wv);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

  float* out = p.out + int64_t{blockIdx.z} * p.rows * p.cols;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t r = r0 + ty * kRowsPerThread + i;
    if (r >= p.rows) break;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + 4 * tx + j;
      if (n < p.cols) out[r * p.cols + n] = acc[i][j];
    }
  }
}

// y[r, n] = sum over splits of partial[z, r, n] (in order), plus the sampled bias when b_mu is set.
// With one split, partial is y itself.
__global__ void __launch_bounds__(kThreads)
    finish_kernel(const float* partial, int splits, int64_t rows, int64_t cols, const float* b_mu, const float* b_rho,
                  NoiseStream b_stream, float* y) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    float sum = partial[i];
    for (int z = 1; z < splits; ++z) sum += partial[z * total + i];
    if (b_mu != nullptr) {
      const int64_t n = i % cols;
      sum += sample_one(b_mu[n], b_rho[n], device_eps_at(b_stream, static_cast<uint64_t>(n)));
    }
    y[i] = sum;
  }
}

// *dmu = dw and *drho = dw * eps * sigmoid(rho), plus (*dkl) times the KL term's gradient when dkl
// is set: as gaussian_impl.h's sample_grad_kl.
__device__ __forceinline__ void sample_grad_one(float dw, float e, float mu, float rho, float mean, float std_prior,
                                                const float* dkl, float* dmu, float* drho) {
  if (dkl == nullptr) {
    *dmu = dw;
    *drho = dw * e * sigmoid(rho);
    return;
  }
  const float scale = *dkl, sigma = softplus(rho);
  const float total = fmaf(fmaf(sigma, e, mu) - mean, scale / (std_prior * std_prior), dw);
  *dmu = total;
  *drho = (total * e - scale / sigma) * sigmoid(rho);
}

__global__ void __launch_bounds__(1) add_kernel(const float* addend, float* sum) { *sum += *addend; }

constexpr int kGradTile = 64;  // dW tile: 64 x 64, 16 x 16 threads of 4 x 4
constexpr int kGradRows = 32;  // rows of dy and x per shared-memory stage

// acc[i][j] += dy[r][4 ty + i] x[r][4 tx + j] over the first `rows` rows of a stage: the thread's
// 4 x 4 of a 64 x 64 tile of dW = dy^T x.
__device__ __forceinline__ void accumulate_dw(const float (*dy)[kGradTile], const float (*x)[kGradTile], int rows,
                                              int tx, int ty, float acc[4][4]) {
#pragma unroll 8
  for (int r = 0; r < rows; ++r) {
    float dv[4], xv[4];
    load4(&dy[r][4 * ty], dv);
    load4(&x[r][4 * tx], xv);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(dv[i], xv[j], acc[i][j]);
    }
  }
}

// dW's epilogue for W[o, k .. k + 3] (those < in), with acc = dW there: dw_mu, dw_rho (eps
// regenerated, and the KL's terms with p.dkl); with w set, also the sampled W there.
__device__ __forceinline__ void weight_grad_epilogue(const LinearGradParams& p, bool aligned, int64_t o, int64_t k,
                                                     float acc[4], float* w) {
  const int64_t flat = o * p.in + k;
  const bool with_mu = w != nullptr || p.dkl != nullptr;
  float e[4], rho[4] = {0, 0, 0, 0}, mu[4] = {0, 0, 0, 0}, drho[4];
  eps4(p.w_stream, static_cast<uint64_t>(flat), e);
  const bool vector = aligned && flat % 4 == 0 && k + 4 <= p.in;
  load_run(p.w_rho, with_mu ? p.w_mu : nullptr, flat, p.in - k, vector, rho, mu);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const bool inside = k + j < p.in;
    if (w != nullptr && inside) w[j] = sample_one(mu[j], rho[j], e[j]);
    const float mean = p.dkl == nullptr ? 0.0f : p.w_prior.mean[p.w_prior.per_element && inside ? flat + j : 0];
    sample_grad_one(acc[j], e[j], mu[j], rho[j], mean, p.w_prior.std, p.dkl, &acc[j], &drho[j]);
  }
  if (vector) {
    store4(p.dw_mu + flat, acc);
    store4(p.dw_rho + flat, drho);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (k + j < p.in) {
        p.dw_mu[flat + j] = acc[j];
        p.dw_rho[flat + j] = drho[j];
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) weight_grad_kernel(LinearGradParams p, bool aligned) {
  __shared__ __align__(16) float dy_tile[kGradRows][kGradTile];
  __shared__ __align__(16) float x_tile[kGradRows][kGradTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t in_tiles = (p.in + kGradTile - 1) / kGradTile;
  const int64_t k0 = first_tile(in_tiles) * kGradTile, o0 = second_tile(in_tiles) * kGradTile;
  float acc[4][4] = {};
  for (int64_t r0 = 0; r0 < p.rows; r0 += kGradRows) {
#pragma unroll
    for (int k = 0; k < kGradRows * kGradTile / kThreads; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      const int r = idx / kGradTile, c = idx % kGradTile;
      const bool row_ok = r0 + r < p.rows;
      dy_tile[r][c] = row_ok && o0 + c < p.out ? p.dy[(r0 + r) * p.out + o0 + c] : 0.0f;
      x_tile[r][c] = row_ok && k0 + c < p.in ? p.x[(r0 + r) * p.in + k0 + c] : 0.0f;
    }
    __syncthreads();
    accumulate_dw(dy_tile, x_tile, kGradRows, tx, ty, acc);
    __syncthreads();
  }
  const int64_t k = k0 + 4 * tx;
  if (k >= p.in) return;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t o = o0 + 4 * ty + i;
    if (o >= p.out) break;
    weight_grad_epilogue(p, aligned, o, k, acc[i], nullptr);
  }
}

// The fused backward at up to kFusedMaxRows rows (kRows = 32 or 64): W is read, and its noise
// regenerated, once for both dW's epilogue and dx = dy W, where the separate kernels (weight
// gradient, then the product sampling W again) did both twice. Each block owns 64 columns k of W
// and a run of `tiles_per_split` 64-row tiles o; per tile, dW = dy[:, o]^T x[:, k] (16 x 16 threads
// of 4 x 4), whose epilogue keeps the sampled W in shared memory, then dx[:, k] += dy[:, o] W[o, k].
// The block's dx, summed over its tiles in order, goes to out[split] (dx itself with one split).
template <int kRows>
__global__ void __launch_bounds__(kThreads, 2)
    fused_backward_kernel(LinearGradParams p, bool aligned, int64_t tiles_per_split, float* out) {
  constexpr int kRowsPerThread = kRows / 16;  // of dx: 16 x 16 threads over kRows x 64
  __shared__ __align__(16) float x_tile[kRows][kGradTile];
  __shared__ __align__(16) float dy_tile[kRows][kGradTile];
  __shared__ __align__(16) float w_tile[kGradTile][kGradTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t in_tiles = (p.in + kGradTile - 1) / kGradTile;
  const int64_t k0 = first_tile(in_tiles) * kGradTile, split = second_tile(in_tiles);
  const int64_t o_begin = split * tiles_per_split * kGradTile;
  const int64_t o_end = o_begin + tiles_per_split * kGradTile < p.out ? o_begin + tiles_per_split * kGradTile : p.out;
  const int rows = static_cast<int>(p.rows);
  for (int idx = threadIdx.x; idx < kRows * kGradTile; idx += kThreads) {
    const int r = idx / kGradTile, c = idx % kGradTile;
    x_tile[r][c] = r < rows && k0 + c < p.in ? p.x[r * p.in + k0 + c] : 0.0f;
  }
  float dx[kRowsPerThread][4] = {};
  for (int64_t o0 = o_begin; o0 < o_end; o0 += kGradTile) {
    for (int idx = threadIdx.x; idx < kRows * kGradTile; idx += kThreads) {
      const int r = idx / kGradTile, c = idx % kGradTile;
      dy_tile[r][c] = r < rows && o0 + c < p.out ? p.dy[r * p.out + o0 + c] : 0.0f;
    }
    __syncthreads();
    float acc[4][4] = {};
    accumulate_dw(dy_tile, x_tile, rows, tx, ty, acc);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t o = o0 + 4 * ty + i, k = k0 + 4 * tx;
      float w[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (o < p.out && k < p.in) weight_grad_epilogue(p, aligned, o, k, acc[i], w);
      store4(&w_tile[4 * ty + i][4 * tx], w);
    }
    __syncthreads();
#pragma unroll 8
    for (int o = 0; o < kGradTile; ++o) {
      float wv[4];
      load4(&w_tile[o][4 * tx], wv);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const float d = dy_tile[kRowsPerThread * ty + i][o];
#pragma unroll
        for (int j = 0; j < 4; ++j) dx[i][j] = fmaf(d, wv[j], dx[i][j]);
      }
    }
    __syncthreads();
  }
  float* dx_out = out + split * p.rows * p.in;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int r = kRowsPerThread * ty + i;
    if (r >= rows) break;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = k0 + 4 * tx + j;
      if (k < p.in) dx_out[r * p.in + k] = dx[i][j];
    }
  }
}

// db_mu = column sums of dy (in row order), db_rho = db_mu * eps * sigmoid(b_rho) (plus the KL's terms).
__global__ void __launch_bounds__(kThreads) bias_grad_kernel(LinearGradParams p) {
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < p.out; o += int64_t{gridDim.x} * blockDim.x) {
    float sum = 0.0f;
    for (int64_t r = 0; r < p.rows; ++r) sum += p.dy[r * p.out + o];
    const float mean = p.dkl == nullptr ? 0.0f : p.b_prior.mean[p.b_prior.per_element ? o : 0];
    sample_grad_one(sum, device_eps_at(p.b_stream, static_cast<uint64_t>(o)), p.b_mu[o], p.b_rho[o], mean,
                    p.b_prior.std, p.dkl, &p.db_mu[o], &p.db_rho[o]);
  }
}

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// How one product C[rows, cols] = A Wt over `contraction` is cut into blocks.
struct ProductPlan {
  bool sample;  // sample W tiles in the kernel (else W was sampled into scratch)
  int rows_per_thread;
  int64_t row_tiles, col_tiles, split_len;
  int splits;

  ProductPlan(int64_t rows, int64_t cols, int64_t contraction) {
    sample = rows <= kFusedMaxRows;
    rows_per_thread = rows <= 32 ? 8 : 16;
    row_tiles = (rows + 4 * rows_per_thread - 1) / (4 * rows_per_thread);
    col_tiles = (cols + kTileN - 1) / kTileN;
    // Split the contraction until the grid covers every multiprocessor about twice, in one wave (two
    // blocks fit on one).
    const int64_t steps = (contraction + kTileC - 1) / kTileC;
    const int64_t tiles = std::max<int64_t>(1, row_tiles * col_tiles);
    const int64_t wanted =
        std::min<int64_t>(std::max<int64_t>(1, steps), std::max<int64_t>(1, 2 * multiprocessors() / tiles));
    const int64_t steps_per_split = std::max<int64_t>(1, (steps + wanted - 1) / wanted);
    split_len = steps_per_split * kTileC;
    splits = static_cast<int>(std::max<int64_t>(1, (contraction + split_len - 1) / split_len));
  }

  size_t w_bytes(const LinearParams& p) const { return sample ? 0 : round_up(sizeof(float) * p.out * p.in); }
  size_t partial_bytes(int64_t rows, int64_t cols) const {
    return splits > 1 ? round_up(sizeof(float) * splits * rows * cols) : 0;
  }
};

// How fused_backward_kernel cuts W, at 1 to kFusedMaxRows rows: strips of 64 columns, each cut into
// runs of 64-row tiles until the grid has about 8 blocks a multiprocessor (2 fit at a time: the
// last, partial wave then idles a small share of the GPU); one dx partial sum per run.
struct FusedBackwardPlan {
  bool fused;
  int64_t in_tiles = 0, tiles_per_split = 0, splits = 1;

  explicit FusedBackwardPlan(const LinearParams& p)
      : fused(p.rows > 0 && p.rows <= kFusedMaxRows && p.in > 0 && p.out > 0) {
    if (!fused) return;
    in_tiles = (p.in + kGradTile - 1) / kGradTile;
    const int64_t out_tiles = (p.out + kGradTile - 1) / kGradTile;
    const int64_t wanted = std::min<int64_t>(out_tiles, (8 * multiprocessors() + in_tiles - 1) / in_tiles);
    tiles_per_split = (out_tiles + wanted - 1) / wanted;
    splits = (out_tiles + tiles_per_split - 1) / tiles_per_split;
  }

  size_t partial_bytes(const LinearParams& p) const {
    return fused && splits > 1 ? round_up(sizeof(float) * splits * p.rows * p.in) : 0;
  }
};

// Runs the product into `partial` (or `c` itself with one split); `w` is the sampled W when the
// plan does not sample.
cudaError_t run_product(const ProductPlan& plan, const LinearParams& p, const float* a, int64_t rows, int64_t lda,
                        int64_t contraction, int64_t cols, bool transposed, const float* w, float* partial, float* c,
                        cudaStream_t stream) {
  ProductArgs args{a,
                   rows,
                   lda,
                   contraction,
                   cols,
                   plan.sample ? p.w_mu : w,
                   p.w_rho,
                   p.in,
                   p.w_stream,
                   transposed,
                   all_aligned16({plan.sample ? p.w_mu : w, p.w_rho}),
                   plan.split_len,
                   plan.row_tiles,
                   plan.splits > 1 ? partial : c};
  const dim3 grid = tile_grid(plan.row_tiles, plan.col_tiles, plan.splits);
  if (plan.sample && plan.rows_per_thread == 8) {
    product_kernel<8, true><<<grid, kThreads, 0, stream>>>(args, p.out);
  } else if (plan.sample) {
    product_kernel<16, true><<<grid, kThreads, 0, stream>>>(args, p.out);
  } else {
    product_kernel<16, false><<<grid, kThreads, 0, stream>>>(args, p.out);
  }
  return cudaGetLastError();
}

// The KL's partial sums and the bias's KL, after the product's scratch.
size_t kl_scratch_bytes(const LinearParams& p) {
  return p.with_kl ? round_up(gaussian_kl_scratch_bytes()) + round_up(sizeof(float)) : 0;
}

// *kl = the KL of W plus the bias's, each summed by gaussian_kl.
cudaError_t linear_kl(const LinearParams& p, void* scratch, float* kl, cudaStream_t stream) {
  float* bias_kl = reinterpret_cast<float*>(static_cast<char*>(scratch) + round_up(gaussian_kl_scratch_bytes()));
  cudaError_t status = gaussian_kl(p.w_stream, p.out * p.in, p.w_mu, p.w_rho, p.w_prior, scratch, kl, stream);
  if (status != cudaSuccess || !p.has_bias) return status;
  status = gaussian_kl(p.b_stream, p.out, p.b_mu, p.b_rho, p.b_prior, scratch, bias_kl, stream);
  if (status != cudaSuccess) return status;
  add_kernel<<<1, 1, 0, stream>>>(bias_kl, kl);
  return cudaGetLastError();
}

}  // namespace

size_t linear_forward_scratch_bytes(const LinearParams& p) {
  const ProductPlan plan(p.rows, p.out, p.in);
  return plan.w_bytes(p) + plan.partial_bytes(p.rows, p.out) + kl_scratch_bytes(p);
}

size_t linear_backward_scratch_bytes(const LinearParams& p) {
  const FusedBackwardPlan fused(p);
  if (fused.fused) return fused.partial_bytes(p);
  const ProductPlan plan(p.rows, p.in, p.out);
  return plan.w_bytes(p) + plan.partial_bytes(p.rows, p.in);
}

cudaError_t linear_forward(const LinearParams& p, void* scratch, float* y, cudaStream_t stream, float* kl) {
  const ProductPlan plan(p.rows, p.out, p.in);
  if (p.with_kl) {
    void* kl_scratch = static_cast<char*>(scratch) + plan.w_bytes(p) + plan.partial_bytes(p.rows, p.out);
    const cudaError_t status = linear_kl(p, kl_scratch, kl, stream);
    if (status != cudaSuccess) return status;
  }
  if (p.rows == 0 || p.out == 0) return cudaSuccess;
  float* w = static_cast<float*>(scratch);
  float* partial = reinterpret_cast<float*>(static_cast<char*>(scratch) + plan.w_bytes(p));
  if (!plan.sample) {
    const cudaError_t status = sample_gaussian(p.w_stream, p.out * p.in, p.w_mu, p.w_rho, w, stream);
    if (status != cudaSuccess) return status;
  }
  cudaError_t status = run_product(plan, p, p.x, p.rows, p.in, p.in, p.out, true, w, partial, y, stream);
  if (status != cudaSuccess) return status;
  if (plan.splits == 1 && !p.has_bias) return cudaSuccess;
  finish_kernel<<<grid_for(p.rows * p.out), kThreads, 0, stream>>>(
      plan.splits > 1 ? partial : y, plan.splits, p.rows, p.out, p.has_bias ? p.b_mu : nullptr, p.b_rho, p.b_stream, y);
  return cudaGetLastError();
}

cudaError_t linear_backward(const LinearGradParams& p, void* scratch, cudaStream_t stream) {
  if (p.has_bias && p.out > 0) {
    bias_grad_kernel<<<grid_for(p.out), kThreads, 0, stream>>>(p);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  const bool aligned = all_aligned16({p.w_mu, p.w_rho, p.dw_mu, p.dw_rho});
  const FusedBackwardPlan fused(p);
  if (fused.fused) {
    float* out = fused.splits > 1 ? static_cast<float*>(scratch) : p.dx;
    const dim3 grid = tile_grid(fused.in_tiles, fused.splits);
    if (p.rows <= 32) {
      fused_backward_kernel<32><<<grid, kThreads, 0, stream>>>(p, aligned, fused.tiles_per_split, out);
    } else {
      fused_backward_kernel<64><<<grid, kThreads, 0, stream>>>(p, aligned, fused.tiles_per_split, out);
    }
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess || fused.splits == 1) return status;
    finish_kernel<<<grid_for(p.rows * p.in), kThreads, 0, stream>>>(out, static_cast<int>(fused.splits), p.rows, p.in,
                                                                    nullptr, nullptr, p.b_stream, p.dx);
    return cudaGetLastError();
  }
  if (p.out > 0 && p.in > 0) {
    const dim3 grid = tile_grid((p.in + kGradTile - 1) / kGradTile, (p.out + kGradTile - 1) / kGradTile);
    weight_grad_kernel<<<grid, kThreads, 0, stream>>>(p, aligned);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  if (p.rows == 0 || p.in == 0) return cudaSuccess;
  // dx = dy W: the contraction runs over W's rows.
  const ProductPlan plan(p.rows, p.in, p.out);
  float* w = static_cast<float*>(scratch);
  float* partial = reinterpret_cast<float*>(static_cast<char*>(scratch) + plan.w_bytes(p));
  if (!plan.sample) {
    const cudaError_t status = sample_gaussian(p.w_stream, p.out * p.in, p.w_mu, p.w_rho, w, stream);
    if (status != cudaSuccess) return status;
  }
  cudaError_t status = run_product(plan, p, p.dy, p.rows, p.out, p.out, p.in, false, w, partial, p.dx, stream);
  if (status != cudaSuccess || plan.splits == 1) return status;
  finish_kernel<<<grid_for(p.rows * p.in), kThreads, 0, stream>>>(partial, plan.splits, p.rows, p.in, nullptr, nullptr,
                                                                  p.b_stream, p.dx);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fusedbnn
