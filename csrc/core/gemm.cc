#include "gemm.h"

#include <algorithm>

#include "cpu_features.h"

namespace fusedbnn {

GemmTileFn gemm_tile_scalar();
#if defined(FUSEDBNN_HAVE_AVX2)
GemmTileFn gemm_tile_avx2();
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
GemmTileFn gemm_tile_avx512();
#endif

namespace {

GemmTileFn pick_tile() {
  switch (active_isa()) {
#if defined(FUSEDBNN_HAVE_AVX512)
    case Isa::kAvx512:
      return gemm_tile_avx512();
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
    case Isa::kAvx2:
      return gemm_tile_avx2();
#endif
    default:
      return gemm_tile_scalar();
  }
}

GemmTileFn best_tile() {
  static const GemmTileFn tile = pick_tile();
  return tile;
}

// Cut the larger side of C into at most 16 tiles of a multiple of 16, at least min_tile wide.
int64_t tile_size(int64_t extent, int64_t min_tile) {
  return std::max<int64_t>(min_tile, (ceil_div(extent, 16) + 15) / 16 * 16);
}

}  // namespace

void gemm(const ParallelFor& pf, const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  const GemmTileFn tile = best_tile();
  const bool split_n = g.n >= g.m;
  const int64_t extent = split_n ? g.n : g.m, step = tile_size(extent, g.min_tile);
  const int64_t other = split_n ? g.m : g.n;
  pf(ceil_div(extent, step), std::max<int64_t>(1, step * other * g.k / 8), [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t lo = t * step, hi = std::min(extent, lo + step);
      if (split_n) {
        tile(g, 0, g.m, lo, hi);
      } else {
        tile(g, lo, hi, 0, g.n);
      }
    }
  });
}

void gemm_serial(const GemmArgs& g) {
  if (g.m > 0 && g.n > 0) best_tile()(g, 0, g.m, 0, g.n);
}

}  // namespace fusedbnn
