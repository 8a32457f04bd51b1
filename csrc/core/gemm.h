// Single-precision matrix product for the CPU kernels: C = op(A) op(B) (or C += ...), row-major.
// Tiles of C are computed by Eigen's blocked product, compiled once per instruction set
// (gemm_{scalar,avx2,avx512}.cc) and chosen at run time; the tile grid depends on the sizes alone,
// so results do not depend on the number of threads.
#pragma once

#include <cstdint>

#include "parallel.h"

namespace fusedbnn {

struct GemmArgs {
  int64_t m, n, k;
  const float* a;  // [m, k] with row stride lda, or [k, m] when trans_a
  int64_t lda;
  bool trans_a;
  const float* b;  // [k, n] with row stride ldb, or [n, k] when trans_b
  int64_t ldb;
  bool trans_b;
  float* c;  // [m, n] with row stride ldc
  int64_t ldc;
  bool accumulate = false;  // C += op(A) op(B) instead of C = op(A) op(B)
  // The narrowest tile of C along the side gemm cuts. Every tile packs all of the other
  // operand again: products with a long contraction (k of thousands) want wider tiles.
  int64_t min_tile = 64;
};

// C[m0:m1, n0:n1] of the product, single-threaded.
using GemmTileFn = void (*)(const GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

void gemm(const ParallelFor& pf, const GemmArgs& g);

// The whole product as one single-threaded tile, for callers that cut their work into tiles
// themselves: gemm's cut of such a tile would pack its other operand again for every piece (Linear's
// forward at B=512, 1024 -> 1024, AVX2, one thread: 15.5 -> 14.2 ms). The result depends on the sizes alone.
void gemm_serial(const GemmArgs& g);

}  // namespace fusedbnn
