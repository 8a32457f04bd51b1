// The vectorised CPU kernels' normals (AVX2), compiled with their flags apart from the emulated
// kernels: kernels_test.cc checks that the CUDA kernels draw the same bits.
#include "core/gaussian_impl.h"

namespace fusedbnn {

void avx2_fill_normal(const NoiseStream& s, int64_t n, float* out) {
  simd::GaussianImpl<simd::Avx2>::fill_normal(s, 0, n, out);
}

}  // namespace fusedbnn
