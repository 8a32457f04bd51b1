// The Gaussian kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "gaussian_impl.h"

namespace fusedbnn {

const GaussianKernels& avx2_kernels() {
  static const GaussianKernels kernels = simd::GaussianImpl<simd::Avx2>::table("avx2");
  return kernels;
}

}  // namespace fusedbnn
