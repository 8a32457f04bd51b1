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

// Float arithmetic for the polynomials the CUDA kernels share with the vectorised CPU kernels
// (noise.h's log1p_unit and box_muller_poly), one float and one int32 a "lane".
struct FloatOps {
  using F = float;
  using I = int32_t;
  __host__ __device__ static float set1(float v) { return v; }
  __host__ __device__ static I set1_i(int v) { return v; }
  __host__ __device__ static float fma(float a, float b, float c) { return fmaf(a, b, c); }
  __host__ __device__ static float mul(float a, float b) { return a * b; }
  __host__ __device__ static float sub(float a, float b) { return a - b; }
  __host__ __device__ static float max(float a, float b) { return fmaxf(a, b); }
  __host__ __device__ static float sqrt(float a) { return sqrtf(a); }  // correctly rounded, as the CPU's
  __host__ __device__ static float to_float(I a) { return static_cast<float>(a); }
  __host__ __device__ static I as_int(float a) {
    I i;
    memcpy(&i, &a, sizeof(i));
    return i;
  }
  __host__ __device__ static float as_float(I a) {
    float f;
    memcpy(&f, &a, sizeof(f));
    return f;
  }
  // Integer arithmetic wraps, as the CPU's lanes do.
  __host__ __device__ static I add_i(I a, I b) {
    return static_cast<I>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  }
  __host__ __device__ static I sub_i(I a, I b) {
    return static_cast<I>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
  }
  __host__ __device__ static I and_i(I a, I b) { return a & b; }
  __host__ __device__ static I xor_i(I a, I b) { return a ^ b; }
  __host__ __device__ static I srai(I a, int n) { return a >> n; }
  __host__ __device__ static I slli(I a, int n) { return static_cast<I>(static_cast<uint32_t>(a) << n); }
};

// The kernels' noise: Philox and box_muller_poly, the vectorised CPU kernels' maths, so that both
// draw the same bits. Float operations only: the libm path's float(double(2 pi) u) needs a double
// multiply, which most cards (compute capability 7.5, 8.6, 8.9) run at 2 results a cycle per
// multiprocessor against 128 in float, and CUDA's sincosf carries a range reduction for huge
// arguments (local memory, a branch) that v < 2 pi never takes. noise.h's libm versions
// (normal_group, eps_at) are host-only.
__device__ __forceinline__ void device_normal_group(const NoiseStream& s, uint64_t g, float out[4]) {
  const Philox4 r = philox4x32_10(counter_add(s.counter, g), s.key[0], s.key[1]);
  auto lane = [](uint32_t x) { return static_cast<int32_t>(x); };
  box_muller_poly<FloatOps>(lane(r.v[0]), lane(r.v[1]), &out[0], &out[1]);
  box_muller_poly<FloatOps>(lane(r.v[2]), lane(r.v[3]), &out[2], &out[3]);
}

__device__ __forceinline__ float device_eps_at(const NoiseStream& s, uint64_t i) {
  float group[4];
  device_normal_group(s, i / 4, group);
  return group[i % 4];
}

// eps of flat elements [f, f + 4): one Philox group when f is a multiple of 4, else the two groups
// it straddles, one after the other (side by side, their four Box-Mullers need more registers than
// the kernels around them have: product_kernel<16, true> spilled 232 bytes). The values are those
// of device_eps_at(s, f + j) either way.
__device__ __forceinline__ void eps4(const NoiseStream& s, uint64_t f, float e[4]) {
  const uint64_t g = f / 4;
  const int skip = static_cast<int>(f % 4);
  if (skip == 0) {
    device_normal_group(s, g, e);
    return;
  }
#pragma unroll 1
  for (int h = 0; h < 2; ++h) {
    float v[4];
    device_normal_group(s, g + h, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (skip + j == 4 * h + k) e[j] = v[k];
      }
    }
  }
}

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
