// The LSTM activations compiled for one instruction set (see CMakeLists.txt for its flags).
#include "lstm_impl.h"

namespace fusedbnn {

const ActivationKernels& avx512_activations() {
  static const ActivationKernels kernels = simd::ActivationImpl<simd::Avx512>::table();
  return kernels;
}

}  // namespace fusedbnn
