// The Gaussian kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "gaussian_impl.h"

namespace fusedbnn {

const GaussianKernels& exact_kernels() {
  static const GaussianKernels kernels = simd::GaussianImpl<simd::ScalarExact>::table("scalar");
  return kernels;
}

}  // namespace fusedbnn
