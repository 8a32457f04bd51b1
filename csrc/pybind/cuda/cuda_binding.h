// Helpers shared by the files of fusedbnn._core.cuda: device pointers and streams arrive as
// integers, launch errors leave as exceptions.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "core/cuda_driver.h"
#include "core/linear.h"
#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {

using Ptr = uintptr_t;

template <class T = float>
T* device(Ptr p) {
  return reinterpret_cast<T*>(p);
}

inline cudaStream_t as_stream(Ptr s) { return reinterpret_cast<cudaStream_t>(s); }

// Launch errors as RuntimeError; with a driver too old for the build, the one that names the driver.
inline void check(cudaError_t status) {
  if (status == cudaSuccess) return;
  const std::string driver_error = cuda::driver_error();
  if (!driver_error.empty()) throw std::runtime_error(driver_error);
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(status));
}

inline void require_sizes(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes) {
    if (s < 0) throw std::invalid_argument("sizes must be >= 0");
  }
}

// A layer's backward params (LinearGradParams, ConvGradParams) from its forward params and the device
// pointers of dy and of the gradients dx, dw_mu, dw_rho, db_mu, db_rho.
template <class GradParams, class Params>
GradParams device_grad_params(const Params& p, Ptr dy, Ptr dx, Ptr dw_mu, Ptr dw_rho, Ptr db_mu, Ptr db_rho) {
  return GradParams{
      p, device<const float>(dy), device(dx), device(dw_mu), device(dw_rho), device(db_mu), device(db_rho)};
}

// LinearParams from device pointers (b_mu = 0: no bias), for the Linear and estimator bindings.
LinearParams linear_params(Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed,
                           Ptr b_mu, Ptr b_rho, const Seed& b_seed);

// The bindings of one op family each, in csrc/pybind/cuda/<family>.cc, called by register_cuda.
void register_cuda_conv(py::module_& m);
void register_cuda_embedding(py::module_& m);
void register_cuda_estimators(py::module_& m);
void register_cuda_lstm(py::module_& m);

}  // namespace pyb
}  // namespace fusedbnn
