// The Gaussian kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "gaussian_impl.h"

namespace fusedbnn {

const GaussianKernels& avx512_kernels() {
  static const GaussianKernels kernels = simd::GaussianImpl<simd::Avx512>::table("avx512");
  return kernels;
}

}  // namespace fusedbnn
