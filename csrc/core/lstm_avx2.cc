// The LSTM activations compiled for one instruction set (see CMakeLists.txt for its flags).
#include "lstm_impl.h"

namespace fusedbnn {

const ActivationKernels& avx2_activations() {
  static const ActivationKernels kernels = simd::ActivationImpl<simd::Avx2>::table();
  return kernels;
}

}  // namespace fusedbnn
