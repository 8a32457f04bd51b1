// fusedbnn._core: the framework-free kernels on NumPy arrays (CPU, single-threaded), so that they
// are tested without TensorFlow. Each op family registers its functions from its own file.
#include "core/cuda_driver.h"
#include "pybind/common.h"

PYBIND11_MODULE(_core, m) {
  using namespace fusedbnn::pyb;
  m.doc() = "fusedbnn's framework-free CPU kernels on NumPy arrays (float32, single-threaded).";
  register_gaussian(m);
  register_linear(m);
  register_estimators(m);
  register_conv(m);
  register_embedding(m);
  register_lstm(m);
  m.def("cuda_driver_error", &fusedbnn::cuda_driver_error, py::arg("driver_version"), py::arg("runtime_version"),
        "Why a driver supporting CUDA driver_version cannot run code built with CUDA runtime_version (both "
        "1000 * major + 10 * minor; 0: no driver), or '' when it can.");
#if defined(FUSEDBNN_WITH_CUDA)
  register_cuda(m);
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
