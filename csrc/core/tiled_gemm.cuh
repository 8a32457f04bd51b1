// A plain shared-memory tiled SGEMM for the CUDA kernels (.cu files only): C(m, n) = sum_k A(m, k)
// B(k, n), each block one BM x BN tile of C in stages of BK along k, each thread TM rows x CG
// groups of 4 consecutive columns of it. With KS > 1, KS groups of threads in a block each sum
// every KS-th stage, and the partial sums are added in shared memory: fewer stages in a row for
// long contractions on few tiles.
// Operands are small accessor types (a strided matrix, optionally transposed, or anything else
// that maps (row, col) to an element), and the epilogue receives each thread's accumulators, so
// that a consumer (bias, LSTM cell update) runs in registers instead of a second pass over C.
// The summation order depends on K alone: results are deterministic on a given GPU model.
#pragma once

#include "cuda_common.cuh"

namespace fusedbnn {
namespace cuda {

// Element (r, c) of a row-major matrix with row stride ld, or of its transpose. kContiguousCols
// tells the tile loader which index walks memory, so that a warp's loads coalesce.
template <bool kTransposed>
struct Strided {
  const float* p;
  int64_t ld;
  static constexpr bool kContiguousCols = !kTransposed;
  __device__ __forceinline__ float operator()(int64_t r, int64_t c) const {
    return kTransposed ? p[c * ld + r] : p[r * ld + c];
  }
};

// The tile of kRows x kCols elements that kThreadCount threads move from an operand to shared
// memory, kPerThread elements each: element q of thread i (counted within those threads) is tile
// element i + q * kThreadCount, with consecutive threads on consecutive elements along the
// operand's contiguous index (coalesced loads).
template <int kRows, int kCols, int kThreadCount, class Op>
struct TileCopy {
  static constexpr int kPerThread = kRows * kCols / kThreadCount;
  static_assert(kRows * kCols % kThreadCount == 0, "every thread moves the same number of elements");

  __device__ __forceinline__ static void coords(int thread, int q, int* r, int* c) {
    const int idx = thread + q * kThreadCount;
    *r = Op::kContiguousCols ? idx / kCols : idx % kRows;
    *c = Op::kContiguousCols ? idx % kCols : idx / kRows;
  }

  // The thread's elements of the tile at (r0, c0), zero outside [0, rows_total) x [0, cols_total).
  __device__ __forceinline__ static void fetch(int thread, const Op& op, int64_t r0, int64_t c0, int64_t rows_total,
                                               int64_t cols_total, float v[kPerThread]) {
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      int r, c;
      coords(thread, q, &r, &c);
      v[q] = r0 + r < rows_total && c0 + c < cols_total ? op(r0 + r, c0 + c) : 0.0f;
    }
  }

  // Into tile[c][r] when kTransposed (A, whose contraction index is the column), else tile[r][c].
  template <bool kTransposed, int kLd>
  __device__ __forceinline__ static void store(int thread, const float v[kPerThread], float (*tile)[kLd]) {
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      int r, c;
      coords(thread, q, &r, &c);
      if (kTransposed) {
        tile[c][r] = v[q];
      } else {
        tile[r][c] = v[q];
      }
    }
  }
};

// Threads of a block: KS groups (one per slice of the contraction), each thread of a group TM rows
// x CG groups of 4 columns.
template <int BM, int BN, int TM, int CG, int KS>
__host__ __device__ constexpr int gemm_threads() {
  return (BM / TM) * (BN / (4 * CG)) * KS;
}

template <int BM, int BN, int TM, int BK, int CG, int KS, class OpA, class OpB, class Epilogue>
__global__ void __launch_bounds__(gemm_threads<BM, BN, TM, CG, KS>())
    tiled_gemm_kernel(int64_t M, int64_t N, int64_t K, OpA a, OpB b, Epilogue epilogue) {
  constexpr int kGroupThreads = gemm_threads<BM, BN, TM, CG, 1>();
  // A thread's column groups lie BN / CG apart, so that a warp's vector reads of a B row are
  // consecutive (conflict-free); its TM rows are consecutive (read as vectors when TM % 4 == 0).
  constexpr int kGroupStride = BN / CG;
  static_assert(BN % (4 * CG) == 0 && (TM % 4 == 0 || TM < 4), "tile shape");
  using CopyA = TileCopy<BM, BK, kGroupThreads, OpA>;
  using CopyB = TileCopy<BK, BN, kGroupThreads, OpB>;
  // Each k-slice group takes every KS-th stage of BK along k, in its own tiles. Rows padded by 4
  // floats: the transposed stores of a tile spread over 8 banks, and rows stay 16-byte aligned for
  // the vector reads.
  __shared__ __align__(16) float a_tiles[KS][BK][BM + 4];
  __shared__ __align__(16) float b_tiles[KS][BK][BN + 4];
  const int slice = threadIdx.x / kGroupThreads, thread = threadIdx.x % kGroupThreads;
  const int tx = thread % (kGroupStride / 4), ty = thread / (kGroupStride / 4);
  const int64_t m_tiles = (M + BM - 1) / BM;
  const int64_t m0 = first_tile(m_tiles) * BM, n0 = second_tile(m_tiles) * BN;
  float (*a_tile)[BM + 4] = a_tiles[slice];
  float (*b_tile)[BN + 4] = b_tiles[slice];

  float acc[TM][CG][4];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int g = 0; g < CG; ++g) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][g][j] = 0.0f;
    }
  }
  // The next tiles wait in registers while the current ones are multiplied, so that their loads
  // are in flight during the arithmetic. Every group runs the same number of stages (those past K
  // load zeros), so that all threads meet at each barrier.
  float a_next[CopyA::kPerThread], b_next[CopyB::kPerThread];
  if (K > 0) {
    CopyA::fetch(thread, a, m0, slice * BK, M, K, a_next);
    CopyB::fetch(thread, b, slice * BK, n0, K, N, b_next);
  }
  for (int64_t stage = 0; stage < K; stage += KS * BK) {
    CopyA::template store<true>(thread, a_next, a_tile);
    CopyB::template store<false>(thread, b_next, b_tile);
    __syncthreads();
    const int64_t k_next = stage + KS * BK + slice * BK;
    if (stage + KS * BK < K) {
      CopyA::fetch(thread, a, m0, k_next, M, K, a_next);
      CopyB::fetch(thread, b, k_next, n0, K, N, b_next);
    }
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float av[TM], bv[CG][4];
      if (TM % 4 == 0) {
#pragma unroll
        for (int i = 0; i < TM; i += 4) load4(&a_tile[k][ty * TM + i], av + i);
      } else {
#pragma unroll
        for (int i = 0; i < TM; ++i) av[i] = a_tile[k][ty * TM + i];
      }
#pragma unroll
      for (int g = 0; g < CG; ++g) load4(&b_tile[k][g * kGroupStride + 4 * tx], bv[g]);
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int g = 0; g < CG; ++g) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][g][j] = fmaf(av[i], bv[g][j], acc[i][g][j]);
        }
      }
    }
    __syncthreads();
  }
  if (KS > 1) {
    // Group 0 adds the other groups' sums in a fixed order and runs the epilogue.
    __shared__ __align__(16) float partial[KS > 1 ? KS - 1 : 1][KS > 1 ? kGroupThreads : 1][TM * CG * 4];
    if (slice > 0) {
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int g = 0; g < CG; ++g) store4(&partial[slice - 1][thread][(i * CG + g) * 4], acc[i][g]);
      }
    }
    __syncthreads();
    if (slice > 0) return;
#pragma unroll
    for (int s = 0; s < KS - 1; ++s) {
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int g = 0; g < CG; ++g) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][g][j] += partial[s][thread][(i * CG + g) * 4 + j];
        }
      }
    }
  }
#pragma unroll
  for (int g = 0; g < CG; ++g) {
    const int64_t n = n0 + g * kGroupStride + 4 * tx;
    if (n >= N) break;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + ty * TM + i;
      if (m < M) epilogue(m, n, acc[i][g]);
    }
  }
}

// Launches C = A B over M x N (nothing when either is empty; K = 0 gives zeros). The epilogue is
// called as epilogue(m, n, acc) with acc the values of columns n .. n + 3, some of which may lie
// past N.
template <int BM, int BN, int TM, int BK, int CG = 1, int KS = 1, class OpA, class OpB, class Epilogue>
cudaError_t tiled_gemm(int64_t M, int64_t N, int64_t K, const OpA& a, const OpB& b, const Epilogue& epilogue,
                       cudaStream_t stream) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  const dim3 grid = tile_grid((M + BM - 1) / BM, (N + BN - 1) / BN);
  constexpr int kThreadCount = gemm_threads<BM, BN, TM, CG, KS>();
  tiled_gemm_kernel<BM, BN, TM, BK, CG, KS><<<grid, kThreadCount, 0, stream>>>(M, N, K, a, b, epilogue);
  return cudaGetLastError();
}

// The usual epilogue: C (row stride ldc) = the product, plus bias[n] when bias is not null.
struct StoreEpilogue {
  float* c;
  int64_t ldc, cols;
  const float* bias;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j < cols) c[m * ldc + n + j] = bias != nullptr ? acc[j] + bias[n + j] : acc[j];
    }
  }
};

}  // namespace cuda
}  // namespace fusedbnn
