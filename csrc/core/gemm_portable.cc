// The matrix-product tile without Eigen, for builds that have no Eigen headers (CMake picks this
// file instead of gemm_{scalar,avx2,avx512}.cc then; see CMakeLists.txt). Plain loops that the
// compiler vectorises: correct everywhere, several times slower than Eigen's blocked product.
#include <algorithm>

#include "gemm.h"

namespace fusedbnn {
namespace {

void portable_tile(const GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const auto a = [&](int64_t i, int64_t p) { return g.trans_a ? g.a[p * g.lda + i] : g.a[i * g.lda + p]; };
  const auto b = [&](int64_t p, int64_t j) { return g.trans_b ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j]; };
  for (int64_t i = m0; i < m1; ++i) {
    float* c = g.c + i * g.ldc;
    if (!g.accumulate) std::fill(c + n0, c + n1, 0.0f);
    for (int64_t p = 0; p < g.k; ++p) {
      const float scale = a(i, p);
      for (int64_t j = n0; j < n1; ++j) c[j] += scale * b(p, j);
    }
  }
}

}  // namespace

// gemm.cc asks for one tile function per instruction set; all of them are this one here.
GemmTileFn gemm_tile_scalar() { return &portable_tile; }
#if defined(FUSEDBNN_HAVE_AVX2)
GemmTileFn gemm_tile_avx2() { return &portable_tile; }
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
GemmTileFn gemm_tile_avx512() { return &portable_tile; }
#endif

}  // namespace fusedbnn
