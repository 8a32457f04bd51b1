// CUDA Bayesian embedding. Without max_norm the forward pass gives each thread four consecutive
// elements of one looked-up row (16-byte accesses when rows are 16-byte aligned), so only the rows
// the ids name are read. The max_norm forward pass and the backward pass need a whole row at once
// (its norm, g . e): there a block owns a row, each thread a run of four columns and every
// blockDim.x-th run after it, and a block reduction gives the row's sums.
#include "cuda_common.cuh"
#include "embedding_cuda.h"
#include "embedding_norm.h"

namespace fusedbnn {
namespace cuda {
namespace {

// The row id of item n, or -1 when it is out of range or the padding row.
__device__ __forceinline__ int64_t row_of(const EmbeddingParams& p, int64_t n, int* bad_id) {
  const int64_t id = p.ids_int64 ? static_cast<const int64_t*>(p.ids)[n] : static_cast<const int32_t*>(p.ids)[n];
  if (id < 0 || id >= p.num_embeddings) {
    if (bad_id != nullptr) *bad_id = 1;
    return -1;
  }
  return id == p.padding_idx ? -1 : id;
}

__device__ __forceinline__ int run_width(int64_t dim, int64_t col) {
  return static_cast<int>(dim - col < 4 ? dim - col : 4);
}

// Calls fn(n, col, width, vector) for every run of up to four elements [col, col + width) of
// output row n; vector says the run is a full, 16-byte-aligned quad in every tensor.
template <class Fn>
__device__ __forceinline__ void for_runs(const EmbeddingParams& p, bool aligned, Fn fn) {
  const int64_t runs_per_row = (p.dim + 3) / 4;
  const int64_t total = p.count * runs_per_row;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < total;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = item / runs_per_row, col = 4 * (item % runs_per_row);
    const int width = run_width(p.dim, col);
    fn(n, col, width, aligned && width == 4);
  }
}

// Calls fn(col, width, vector) for the runs of a row that thread `lane` of `lanes` owns: run
// `lane`, then every lanes-th run after it.
template <class Fn>
__device__ __forceinline__ void for_row_runs(int64_t dim, bool aligned, int lane, int lanes, Fn fn) {
  for (int64_t col = 4 * int64_t{lane}; col < dim; col += 4 * int64_t{lanes}) {
    const int width = run_width(dim, col);
    fn(col, width, aligned && width == 4);
  }
}

// A run of `width` elements; the elements past it read as zero and are never written. The arrays
// are indexed by constants only (unrolled loops), so they stay in registers.
__device__ __forceinline__ void load_run(const float* src, int width, bool vector, float v[4]) {
  if (vector) {
    load4(src, v);
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = j < width ? src[j] : 0.0f;
}

__device__ __forceinline__ void store_run(float* dst, int width, bool vector, const float v[4]) {
  if (vector) {
    store4(dst, v);
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j < width) dst[j] = v[j];
  }
}

// The sampled weights w of the run at flat table index `flat`, with its rho and eps.
__device__ __forceinline__ void sample_run(const EmbeddingParams& p, int64_t flat, int width, bool vector, float w[4],
                                           float rho[4], float e[4]) {
  float mu[4];
  load_run(p.w_mu + flat, width, vector, mu);
  load_run(p.w_rho + flat, width, vector, rho);
  eps4(p.w_stream, static_cast<uint64_t>(flat), e);
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = sample_one(mu[j], rho[j], e[j]);
}

// ... and dw/drho = eps * sigmoid(rho) of the run, what the backward pass multiplies by.
__device__ __forceinline__ void sample_run_and_factor(const EmbeddingParams& p, int64_t flat, int width, bool vector,
                                                      float w[4], float factor[4]) {
  float rho[4], e[4];
  sample_run(p, flat, width, vector, w, rho, e);
#pragma unroll
  for (int j = 0; j < 4; ++j) factor[j] = e[j] * sigmoid(rho[j]);
}

__global__ void __launch_bounds__(kThreads)
    forward_kernel(EmbeddingParams p, bool aligned, float* out, float* dw_drho, int* bad_id) {
  for_runs(p, aligned, [&](int64_t n, int64_t col, int width, bool vector) {
    const int64_t row = row_of(p, n, bad_id);
    float w[4] = {0, 0, 0, 0}, factor[4] = {0, 0, 0, 0};
    if (row >= 0) sample_run_and_factor(p, row * p.dim + col, width, vector, w, factor);
    store_run(out + n * p.dim + col, width, vector, w);
    store_run(dw_drho + n * p.dim + col, width, vector, factor);
  });
}

// max_norm > 0, a block per output row: sample the row into out, then scale it there when its
// norm is above max_norm (each thread re-reads only what it wrote).
__global__ void __launch_bounds__(kThreads)
    rescaled_forward_kernel(EmbeddingParams p, bool aligned, float* out, float* dw_drho, int* bad_id) {
  for (int64_t n = blockIdx.x; n < p.count; n += gridDim.x) {
    const int64_t row = row_of(p, n, bad_id);
    float* dst = out + n * p.dim;
    double terms[1] = {0.0};
    for_row_runs(p.dim, aligned, threadIdx.x, blockDim.x, [&](int64_t col, int width, bool vector) {
      float w[4] = {0, 0, 0, 0}, factor[4] = {0, 0, 0, 0};
      if (row >= 0) sample_run_and_factor(p, row * p.dim + col, width, vector, w, factor);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < width) terms[0] += norm_term(w[j], p.norm_type);
      }
      store_run(dst + col, width, vector, w);
      store_run(dw_drho + n * p.dim + col, width, vector, factor);
    });
    if (row < 0) continue;  // row is the block's, so the whole block skips block_sum together
    block_sum<1>(terms);
    const double norm = norm_from_terms(terms[0], p.norm_type);
    if (norm <= p.max_norm) continue;
    const float scale = static_cast<float>(p.max_norm / norm);
    for_row_runs(p.dim, aligned, threadIdx.x, blockDim.x, [&](int64_t col, int width, bool vector) {
      float w[4];
      load_run(dst + col, width, vector, w);
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] *= scale;
      store_run(dst + col, width, vector, w);
    });
  }
}

__device__ __forceinline__ int64_t clamp_index(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// Adds the rows of dy at positions[i], i = begin, begin + step, ... < end, to the run g at col.
// Unrolled so that several rows of dy are in flight at once.
__device__ __forceinline__ void sum_positions(const EmbeddingParams& p, const EmbeddingGradRows& r, int64_t begin,
                                              int64_t end, int step, const float* dy, int64_t col, int width,
                                              bool vector, float g[4]) {
#pragma unroll 4
  for (int64_t i = begin; i < end; i += step) {
    const int64_t n = r.positions[i];
    float d[4] = {0, 0, 0, 0};
    if (n >= 0 && n < p.count) load_run(dy + n * p.dim + col, width, vector, d);
#pragma unroll
    for (int j = 0; j < 4; ++j) g[j] += d[j];
  }
}

// The dw_drho row of a gradient row with positions[first, last): the forward pass's row at its
// first valid position (every position of a row has the same), or null when it lists none.
__device__ __forceinline__ const float* factor_row(const EmbeddingGradParams& p, const EmbeddingGradRows& r,
                                                   int64_t first, int64_t last) {
  for (int64_t i = first; i < last; ++i) {
    const int64_t n = r.positions[i];
    if (n >= 0 && n < p.count) return p.dw_drho + n * p.dim;
  }
  return nullptr;
}

// drho = dw * dw_drho for the run at col (zero without a factor row).
__device__ __forceinline__ void rho_grad(const float* factor, int64_t col, int width, bool vector, const float dw[4],
                                         float drho[4]) {
  float f[4] = {0, 0, 0, 0};
  if (factor != nullptr) load_run(factor + col, width, vector, f);
#pragma unroll
  for (int j = 0; j < 4; ++j) drho[j] = dw[j] * f[j];
}

// A block per gradient row u, as blockDim.x / lanes slices of `lanes` threads. The rows of dy at
// u's positions are summed into dw_mu[u]: with one slice by each thread in position order; with
// several (only when every run has its own lane, for rows of many positions) slice s sums
// positions s, s + slices, ... and slice 0 adds the slices' sums in slice order. Slice 0 goes on:
// without max_norm dw_rho follows at once; with it a second pass turns the sum g into the
// gradient through the rescale (it needs |e|_p and g . e of the whole row, e sampled again) and
// writes dw_rho.
__global__ void __launch_bounds__(kThreads)
    backward_kernel(EmbeddingGradParams p, EmbeddingGradRows r, int lanes, bool aligned) {
  __shared__ float slice_sums[kThreads][4];
  const bool rescale = p.max_norm > 0.0f;
  const int lane = threadIdx.x % lanes, slice = threadIdx.x / lanes, slices = blockDim.x / lanes;
  for (int64_t u = blockIdx.x; u < r.unique; u += gridDim.x) {
    const int64_t row = r.rows[u];
    const bool valid = row >= 0 && row < p.num_embeddings && row != p.padding_idx;
    const int64_t first = clamp_index(r.starts[u], 0, r.positions_size);
    const int64_t last = clamp_index(r.starts[u + 1], first, r.positions_size);
    const float* factor = factor_row(p, r, first, last);
    float* dmu_row = p.dw_mu + u * p.dim;
    float* drho_row = p.dw_rho + u * p.dim;
    if (slices > 1) {  // the same for the whole block, as are `valid` and `rescale`
      float part[4] = {0, 0, 0, 0};
      const int64_t col = 4 * int64_t{lane};
      if (valid && col < p.dim) {
        const int width = run_width(p.dim, col);
        sum_positions(p, r, first + slice, last, slices, p.dy, col, width, aligned && width == 4, part);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) slice_sums[threadIdx.x][j] = part[j];
      __syncthreads();
    }
    double sums[2] = {0.0, 0.0};  // the norm terms of the sampled row e, and g . e
    if (slice == 0) {
      for_row_runs(p.dim, aligned, lane, lanes, [&](int64_t col, int width, bool vector) {
        float g[4] = {0, 0, 0, 0}, drho[4] = {0, 0, 0, 0};
        if (valid) {
          if (slices == 1) {
            sum_positions(p, r, first, last, 1, p.dy, col, width, vector, g);
          } else {
            for (int k = 0; k < slices; ++k) {
#pragma unroll
              for (int j = 0; j < 4; ++j) g[j] += slice_sums[k * lanes + lane][j];
            }
          }
          if (rescale) {
            float w[4], rho[4], e[4];
            sample_run(p, row * p.dim + col, width, vector, w, rho, e);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              if (j >= width) continue;
              sums[0] += norm_term(w[j], p.norm_type);
              sums[1] += static_cast<double>(g[j]) * w[j];
            }
          } else {
            rho_grad(factor, col, width, vector, g, drho);
          }
        }
        store_run(dmu_row + col, width, vector, g);
        if (!rescale || !valid) store_run(drho_row + col, width, vector, drho);
      });
    }
    if (slices > 1) __syncthreads();  // slice_sums read before the next row writes them
    if (!rescale || !valid) continue;
    block_sum<2>(sums);
    if (slice != 0) continue;
    const double norm = norm_from_terms(sums[0], p.norm_type);
    const double scale = p.max_norm / norm, pull = scale * sums[1] / norm;
    for_row_runs(p.dim, aligned, lane, lanes, [&](int64_t col, int width, bool vector) {
      float g[4], drho[4];
      load_run(dmu_row + col, width, vector, g);
      if (norm > p.max_norm) {
        float w[4], rho[4], e[4];
        sample_run(p, row * p.dim + col, width, vector, w, rho, e);
#pragma unroll
        for (int j = 0; j < 4; ++j) g[j] = rescaled_grad(g[j], w[j], scale, pull, norm, p.norm_type);
        store_run(dmu_row + col, width, vector, g);
      }
      rho_grad(factor, col, width, vector, g, drho);
      store_run(drho_row + col, width, vector, drho);
    });
  }
}

bool aligned_rows(const EmbeddingParams& p, std::initializer_list<const void*> ptrs) {
  return p.dim % 4 == 0 && all_aligned16(ptrs);
}

int64_t items(const EmbeddingParams& p) { return p.count * ((p.dim + 3) / 4); }

// Threads of a row's block: one per run of four columns, a power of two (block_sum) from a warp
// to kThreads.
int row_threads(int64_t dim) {
  int threads = 32;
  while (threads < kThreads && 4 * int64_t{threads} < dim) threads *= 2;
  return threads;
}

// One block per row, at most as many blocks as the GPU holds at once (the loop covers the rest).
int row_grid(int64_t rows, int threads) {
  constexpr int kThreadsPerMultiprocessor = 2048;
  const int64_t resident = int64_t{multiprocessors()} * (kThreadsPerMultiprocessor / threads);
  return static_cast<int>(std::max<int64_t>(1, std::min(rows, resident)));
}

// Slices of the backward kernel's blocks: one, or when every run has its own lane, enough that a
// slice sums about kPositionsPerSlice positions of the row with the most (up to kThreads threads).
int backward_slices(const EmbeddingParams& p, const EmbeddingGradRows& r, int lanes) {
  constexpr int64_t kPositionsPerSlice = 16;
  int slices = 1;
  if ((p.dim + 3) / 4 > lanes) return slices;
  while (lanes * slices * 2 <= kThreads && kPositionsPerSlice * slices < r.max_positions) slices *= 2;
  return slices;
}

}  // namespace

cudaError_t embedding_forward(const EmbeddingParams& p, float* out, float* dw_drho, int* bad_id, cudaStream_t stream) {
  if (items(p) == 0) return cudaSuccess;
  const bool aligned = aligned_rows(p, {p.w_mu, p.w_rho, out, dw_drho});
  if (p.max_norm > 0.0f) {
    const int threads = row_threads(p.dim);
    rescaled_forward_kernel<<<row_grid(p.count, threads), threads, 0, stream>>>(p, aligned, out, dw_drho, bad_id);
  } else {
    forward_kernel<<<grid_for(items(p)), kThreads, 0, stream>>>(p, aligned, out, dw_drho, bad_id);
  }
  return cudaGetLastError();
}

cudaError_t embedding_backward(const EmbeddingGradParams& p, const EmbeddingGradRows& rows, cudaStream_t stream) {
  if (rows.unique == 0 || p.dim == 0) return cudaSuccess;
  const bool aligned = aligned_rows(p, {p.w_mu, p.w_rho, p.dy, p.dw_drho, p.dw_mu, p.dw_rho});
  const int lanes = row_threads(p.dim), threads = lanes * backward_slices(p, rows, lanes);
  backward_kernel<<<row_grid(rows.unique, threads), threads, 0, stream>>>(p, rows, lanes, aligned);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fusedbnn
