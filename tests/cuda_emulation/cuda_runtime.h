// A host stand-in for the parts of the CUDA runtime and device language that csrc/core/*.cu use,
// so that the kernels' indexing, tiling, splitting and barriers are checked on machines without a
// GPU: each block runs as blockDim.x std::threads sharing its __shared__ arrays, __syncthreads is a
// std::barrier, blocks run one after another. Not a model of GPU timing, memory or rounding.
#pragma once

#include <math.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block at a time: a function-local static is the block's memory
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;
inline std::barrier<>* emulated_barrier = nullptr;
inline void __syncthreads() { emulated_barrier->arrive_and_wait(); }

struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }

#define CUDART_VERSION 13000
using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
inline cudaError_t cudaDriverGetVersion(int* version) {
  *version = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
// The multiprocessor count steers grid sizes and contraction splits: CUDA_EMULATION_SMS sets it.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  const char* sms = std::getenv("CUDA_EMULATION_SMS");
  *value = sms != nullptr ? std::atoi(sms) : 3;
  return cudaSuccess;
}
// Every launch is checked against CUDA's limits (grid x 2^31 - 1, y and z 65535, 1024 threads);
// while emulation_check_only is set, launches and memsets are checked but not run, so that the
// launch shapes of sizes too large to emulate (or to allocate) are tested too.
inline bool emulation_check_only = false;
inline int emulated_limit_violations = 0;

inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (!emulation_check_only) std::memset(p, value, bytes);
  return cudaSuccess;
}

// What `kernel<<<grid, block, shared, stream>>>(args)` becomes (translate_launches.py).
inline void emulated_launch(dim3 grid, dim3 block, const char* name, const std::function<void()>& kernel) {
  const bool within = grid.x >= 1 && grid.x <= 2147483647u && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 &&
                      grid.z <= 65535 && block.x >= 1 && block.x * block.y * block.z <= 1024;
  if (!within) {
    ++emulated_limit_violations;
    std::printf("FAIL launch of %s: grid (%u, %u, %u), block (%u, %u, %u) beyond CUDA's limits\n", name, grid.x,
                grid.y, grid.z, block.x, block.y, block.z);
  }
  if (emulation_check_only || !within) return;
  gridDim = grid;
  blockDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(block.x);
        emulated_barrier = &barrier;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block.x; ++t) {
          threads.emplace_back([&, t] {
            blockIdx = dim3(bx, by, bz);
            threadIdx = dim3(t);
            kernel();
          });
        }
        for (std::thread& thread : threads) thread.join();
      }
    }
  }
}
