// The LSTM kernels compiled for one instruction set (see CMakeLists.txt for its flags).
#include "lstm_impl.h"

namespace fusedbnn {

const LstmKernels& avx512_lstm_kernels() {
  static const LstmKernels kernels = simd::LstmKernelsImpl<simd::Avx512>::table();
  return kernels;
}

}  // namespace fusedbnn
