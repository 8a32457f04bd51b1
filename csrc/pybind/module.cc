// fusedbnn._core: the framework-free kernels on NumPy arrays (CPU, single-threaded), so that they
// are tested without TensorFlow. Each op family registers its functions from its own file.
#include "pybind/common.h"

PYBIND11_MODULE(_core, m) {
  using namespace fusedbnn::pyb;
  m.doc() = "fusedbnn's framework-free CPU kernels on NumPy arrays (float32, single-threaded).";
  register_gaussian(m);
  register_linear(m);
  register_conv(m);
  register_embedding(m);
  register_lstm(m);
#if defined(FUSEDBNN_WITH_CUDA)
  register_cuda(m);
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
