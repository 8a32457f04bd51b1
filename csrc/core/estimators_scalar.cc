// The local reparameterization kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "estimators_impl.h"

namespace fusedbnn {

const VarianceKernels& scalar_variance_kernels() {
  static const VarianceKernels kernels = simd::VarianceImpl<simd::ScalarExact>::table();
  return kernels;
}

}  // namespace fusedbnn
