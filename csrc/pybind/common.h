// Helpers shared by the pybind11 files of fusedbnn._core.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/noise.h"

namespace fusedbnn {
namespace pyb {

namespace py = pybind11;

using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Seed = std::pair<int64_t, int64_t>;

inline NoiseStream stream(const Seed& seed) { return stream_from_seed(seed.first, seed.second); }

inline Array empty_like(const Array& a) { return Array(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim())); }

// Flipout's rows per example (core/estimators.h): positive, dividing the rows.
inline int64_t checked_rows_per_example(int64_t rows, int64_t rows_per_example) {
  if (rows_per_example < 1 || rows % rows_per_example != 0) {
    throw std::invalid_argument("rows_per_example must be positive and divide the rows (" + std::to_string(rows) +
                                "), got " + std::to_string(rows_per_example));
  }
  return rows_per_example;
}

inline void require_same_shape(const Array& a, const Array& b, const char* what) {
  if (a.ndim() != b.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), b.shape()))
    throw std::invalid_argument(std::string(what) + " must have the same shape");
}

// A layer's backward params (LinearGradParams, ConvGradParams) from its forward params, dy and the
// arrays the gradients dx, dw_mu, dw_rho, db_mu, db_rho go to.
template <class GradParams, class Params>
GradParams grad_params(const Params& p, const Array& dy, Array& dx, Array& dw_mu, Array& dw_rho, Array& db_mu,
                       Array& db_rho) {
  return GradParams{p,
                    dy.data(),
                    dx.mutable_data(),
                    dw_mu.mutable_data(),
                    dw_rho.mutable_data(),
                    db_mu.mutable_data(),
                    db_rho.mutable_data()};
}

// One registration function per op family, defined in that family's file.
void register_gaussian(py::module_& m);
void register_linear(py::module_& m);
void register_estimators(py::module_& m);
void register_conv(py::module_& m);
void register_embedding(py::module_& m);
void register_lstm(py::module_& m);
void register_cuda(py::module_& m);  // csrc/pybind/cuda/, only in CUDA builds

}  // namespace pyb
}  // namespace fusedbnn
