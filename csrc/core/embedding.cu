// CUDA Bayesian embedding: each thread handles four consecutive elements of one looked-up row
// (16-byte accesses when rows are 16-byte aligned), so only the rows the ids name are read.
#include "cuda_common.cuh"
#include "embedding_cuda.h"

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

// Calls fn(n, row, col, width, vector) for every run of up to four elements [col, col + width) of
// output row n; vector says the run is a full, 16-byte-aligned quad in every tensor.
template <class Fn>
__device__ __forceinline__ void for_runs(const EmbeddingParams& p, bool aligned, Fn fn) {
  const int64_t runs_per_row = (p.dim + 3) / 4;
  const int64_t total = p.count * runs_per_row;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < total;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = item / runs_per_row, col = 4 * (item % runs_per_row);
    const int width = static_cast<int>(p.dim - col < 4 ? p.dim - col : 4);
    fn(n, col, width, aligned && width == 4);
  }
}

__global__ void __launch_bounds__(kThreads) forward_kernel(EmbeddingParams p, bool aligned, float* out, int* bad_id) {
  for_runs(p, aligned, [&](int64_t n, int64_t col, int width, bool vector) {
    const int64_t row = row_of(p, n, bad_id);
    float w[4] = {0, 0, 0, 0};
    if (row >= 0) {
      const int64_t flat = row * p.dim + col;
      float mu[4] = {0, 0, 0, 0}, rho[4] = {0, 0, 0, 0}, e[4];
      if (vector) {
        load4(p.w_mu + flat, mu);
        load4(p.w_rho + flat, rho);
      } else {
        for (int j = 0; j < width; ++j) mu[j] = p.w_mu[flat + j], rho[j] = p.w_rho[flat + j];
      }
      eps4(p.w_stream, static_cast<uint64_t>(flat), e);
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = sample_one(mu[j], rho[j], e[j]);
    }
    float* dst = out + n * p.dim + col;
    if (vector) {
      store4(dst, w);
    } else {
      for (int j = 0; j < width; ++j) dst[j] = w[j];
    }
  });
}

__global__ void __launch_bounds__(kThreads) scatter_kernel(EmbeddingParams p, bool aligned, const float* dy,
                                                           float* dw_mu) {
  for_runs(p, aligned, [&](int64_t n, int64_t col, int width, bool vector) {
    const int64_t row = row_of(p, n, nullptr);
    if (row < 0) return;
    const float* src = dy + n * p.dim + col;
    float* dst = dw_mu + row * p.dim + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (vector) {
      atomicAdd(reinterpret_cast<float4*>(dst), *reinterpret_cast<const float4*>(src));
      return;
    }
#endif
    for (int j = 0; j < width; ++j) atomicAdd(dst + j, src[j]);
  });
}

// Runs after every scatter: rows looked up several times get the same values several times.
__global__ void __launch_bounds__(kThreads) rho_grad_kernel(EmbeddingParams p, bool aligned, const float* dw_mu,
                                                            float* dw_rho) {
  for_runs(p, aligned, [&](int64_t n, int64_t col, int width, bool vector) {
    const int64_t row = row_of(p, n, nullptr);
    if (row < 0) return;
    const int64_t flat = row * p.dim + col;
    float dmu[4] = {0, 0, 0, 0}, rho[4] = {0, 0, 0, 0}, e[4], drho[4];
    if (vector) {
      load4(dw_mu + flat, dmu);
      load4(p.w_rho + flat, rho);
    } else {
      for (int j = 0; j < width; ++j) dmu[j] = dw_mu[flat + j], rho[j] = p.w_rho[flat + j];
    }
    eps4(p.w_stream, static_cast<uint64_t>(flat), e);
#pragma unroll
    for (int j = 0; j < 4; ++j) drho[j] = dmu[j] * e[j] * sigmoid(rho[j]);
    if (vector) {
      store4(dw_rho + flat, drho);
    } else {
      for (int j = 0; j < width; ++j) dw_rho[flat + j] = drho[j];
    }
  });
}

bool aligned_rows(const EmbeddingParams& p, std::initializer_list<const void*> ptrs) {
  if (p.dim % 4 != 0) return false;
  for (const void* q : ptrs) {
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;
  }
  return true;
}

int64_t items(const EmbeddingParams& p) { return p.count * ((p.dim + 3) / 4); }

}  // namespace

cudaError_t embedding_forward(const EmbeddingParams& p, float* out, int* bad_id, cudaStream_t stream) {
  if (items(p) == 0) return cudaSuccess;
  const bool aligned = aligned_rows(p, {p.w_mu, p.w_rho, out});
  forward_kernel<<<grid_for(items(p)), kThreads, 0, stream>>>(p, aligned, out, bad_id);
  return cudaGetLastError();
}

cudaError_t embedding_backward(const EmbeddingParams& p, const float* dy, float* dw_mu, float* dw_rho,
                               cudaStream_t stream) {
  const size_t table_bytes = sizeof(float) * p.num_embeddings * p.dim;
  cudaError_t status = cudaMemsetAsync(dw_mu, 0, table_bytes, stream);
  if (status == cudaSuccess) status = cudaMemsetAsync(dw_rho, 0, table_bytes, stream);
  if (status != cudaSuccess || items(p) == 0) return status;
  const bool aligned = aligned_rows(p, {p.w_rho, dy, dw_mu, dw_rho});
  scatter_kernel<<<grid_for(items(p)), kThreads, 0, stream>>>(p, aligned, dy, dw_mu);
  rho_grad_kernel<<<grid_for(items(p)), kThreads, 0, stream>>>(p, aligned, dw_mu, dw_rho);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fusedbnn
