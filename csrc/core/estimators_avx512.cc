// The local reparameterization kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "estimators_impl.h"

namespace fusedbnn {

const VarianceKernels& avx512_variance_kernels() {
  static const VarianceKernels kernels = simd::VarianceImpl<simd::Avx512>::table();
  return kernels;
}

}  // namespace fusedbnn
