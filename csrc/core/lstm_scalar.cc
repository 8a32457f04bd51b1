// The LSTM activations compiled for one instruction set (see CMakeLists.txt for its flags).
#include "lstm_impl.h"

namespace fusedbnn {

const ActivationKernels& scalar_activations() {
  static const ActivationKernels kernels = simd::ActivationImpl<simd::ScalarExact>::table();
  return kernels;
}

}  // namespace fusedbnn
