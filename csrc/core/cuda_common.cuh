// Device helpers shared by the CUDA kernels (.cu files only): noise for runs of four consecutive
// flat elements, 16-byte accesses, block sums, and grid sizing.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "noise.h"

namespace fusedbnn {
namespace cuda {

constexpr int kThreads = 256;

// Returns the status of a launch (or of a function that launches) unless it succeeded.
#define FUSEDBNN_RETURN_IF_FAILED(call)         \
  do {                                          \
    const cudaError_t status_ = (call);         \
    if (status_ != cudaSuccess) return status_; \
  } while (0)

// gridDim.x is at most 2^31 - 1, gridDim.y and gridDim.z 65535.
constexpr int64_t kMaxGridX = 2147483647, kMaxGridYZ = 65535;

// The blocks of a 2-D tiling, all along x with the first axis fastest: the blocks run in the order
// of a (first, second) grid, but the second axis is not capped at 65535 tiles by gridDim.y (e.g. the
// 64-row tiles of a Linear weight gradient with over 4,194,240 outputs). `z` goes along z. Beyond
// the limits a dimension is 0, so that the launch fails instead of covering part of the tiles.
inline dim3 tile_grid(int64_t first_tiles, int64_t second_tiles, int64_t z = 1) {
  const int64_t blocks = first_tiles * second_tiles;
  return dim3(static_cast<unsigned>(blocks <= kMaxGridX ? blocks : 0), 1,
              static_cast<unsigned>(z <= kMaxGridYZ ? z : 0));
}
// The block's tile along each axis of tile_grid(first_tiles, ...).
__device__ __forceinline__ int64_t first_tile(int64_t first_tiles) { return blockIdx.x % first_tiles; }
__device__ __forceinline__ int64_t second_tile(int64_t first_tiles) { return blockIdx.x / first_tiles; }

// eps of flat elements [f, f + 4): one Philox group when f is a multiple of 4, else the two groups
// it straddles. The values are those of eps_at(s, f + j) either way.
__device__ __forceinline__ void eps4(const NoiseStream& s, uint64_t f, float e[4]) {
  const uint64_t g = f / 4;
  const int skip = static_cast<int>(f % 4);
  float lo[4];
  normal_group(s, g, lo);
  if (skip == 0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) e[j] = lo[j];
    return;
  }
  float hi[4];
  normal_group(s, g + 1, hi);
#pragma unroll
  for (int j = 0; j < 4; ++j) e[j] = skip + j < 4 ? lo[skip + j] : hi[skip + j - 4];
}

__device__ __forceinline__ void load4(const float* p, float v[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}

__device__ __forceinline__ void store4(float* p, const float v[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

// Whether every pointer allows 16-byte (float4) accesses: decided on the host, passed to the kernels.
inline bool all_aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Float arithmetic for the polynomials the CUDA kernels share with the vectorised CPU kernels.
struct FloatOps {
  __host__ __device__ static float set1(float v) { return v; }
  __host__ __device__ static float fma(float a, float b, float c) { return fmaf(a, b, c); }
  __host__ __device__ static float mul(float a, float b) { return a * b; }
};

// softplus as the vectorised CPU kernels compute it: log1p_unit instead of log1pf, which with its
// range checks costs about as much as the rest of the softplus (within 2e-7 relative of
// stable_softplus).
__device__ __forceinline__ float softplus(float x) { return fmaxf(x, 0.0f) + log1p_unit<FloatOps>(expf(-fabsf(x))); }

// w from its parameters and noise; fmaf spelled out since the kernels build with --fmad=false.
__device__ __forceinline__ float sample_one(float mu, float rho, float eps) { return fmaf(softplus(rho), eps, mu); }

// Replaces each v[k] by its sum over the threads of the block (a fixed-order tree: the same bits
// every run). blockDim.x must be a power of two <= kThreads, and every thread of the block must
// call it (it holds barriers).
template <int N>
__device__ __forceinline__ void block_sum(double (&v)[N]) {
  __shared__ double partial[N][kThreads];
  const unsigned t = threadIdx.x;
#pragma unroll
  for (int k = 0; k < N; ++k) partial[k][t] = v[k];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) {
#pragma unroll
      for (int k = 0; k < N; ++k) partial[k][t] += partial[k][t + half];
    }
    __syncthreads();
  }
#pragma unroll
  for (int k = 0; k < N; ++k) v[k] = partial[k][0];
  __syncthreads();  // every thread has read the sums before a next call overwrites them
}

// Blocks for a grid-stride loop over `items`: enough to fill every multiprocessor a few times
// over, no more (the loop covers the rest).
inline int multiprocessors() {
  int device = 0, sms = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return sms;
}

inline int grid_for(int64_t items, int threads = kThreads) {
  const int64_t wanted = (items + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t{multiprocessors()} * 8)));
}

}  // namespace cuda
}  // namespace fusedbnn
