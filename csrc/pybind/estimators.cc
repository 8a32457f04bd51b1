// fusedbnn._core: the per-example estimators of the linear layer (flipout, local reparameterization).
#include "core/estimators.h"

#include <optional>

#include "pybind/common.h"
#include "pybind/linear_params.h"

namespace fusedbnn {
namespace pyb {
namespace {

using OptionalArray = std::optional<Array>;

Array flipout_linear(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                     const OptionalArray& b_mu, const OptionalArray& b_rho, const Seed& b_seed, const Seed& x_seed,
                     int64_t rows_per_example) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  Array y({p.rows, p.out});
  flipout_linear_forward(serial_for(), p, stream(x_seed), checked_rows_per_example(p.rows, rows_per_example),
                         y.mutable_data());
  return y;
}

py::tuple flipout_linear_grad(const Array& dy, const Array& x, const Array& w_mu, const Array& w_rho,
                              const Seed& w_seed, const OptionalArray& b_mu, const OptionalArray& b_rho,
                              const Seed& b_seed, const Seed& x_seed, int64_t rows_per_example) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  LinearGradArrays grads(p, dy);
  flipout_linear_backward(serial_for(), grads.params(p, dy), stream(x_seed),
                          checked_rows_per_example(p.rows, rows_per_example));
  return grads.tuple();
}

// (y, y_std)
py::tuple local_reparam_linear(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                               const OptionalArray& b_mu, const OptionalArray& b_rho, const Seed& b_seed,
                               const Seed& x_seed) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  Array y({p.rows, p.out}), y_std({p.rows, p.out});
  local_reparam_linear_forward(serial_for(), p, stream(x_seed), y.mutable_data(), y_std.mutable_data());
  return py::make_tuple(y, y_std);
}

py::tuple local_reparam_linear_grad(const Array& dy, const Array& x, const Array& w_mu, const Array& w_rho,
                                    const Seed& w_seed, const OptionalArray& b_mu, const OptionalArray& b_rho,
                                    const Seed& b_seed, const Seed& x_seed, const Array& y_std) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  LinearGradArrays grads(p, dy);
  require_same_shape(dy, y_std, "dy and y_std");
  local_reparam_linear_backward(serial_for(), grads.params(p, dy), stream(x_seed), y_std.data());
  return grads.tuple();
}

// Elements [0, n) of stateless_fold_in(x_seed, k)'s signs, for the tests of the derivation.
Array estimator_signs(const Seed& x_seed, int64_t k, int64_t n) {
  Array out(n);
  fill_signs(derived_stream(stream(x_seed), static_cast<EstimatorStream>(k)), 0, n, out.mutable_data());
  return out;
}

// The seed of stateless_fold_in(x_seed, k): what the estimator's stream k draws from.
Seed estimator_seed(const Seed& x_seed, int64_t k) { return Seed{folded_seed(stream(x_seed)), k}; }

}  // namespace

// x_seed is keyword-only: it follows the optional bias arguments, as in the TensorFlow ops.
void register_estimators(py::module_& m) {
  // rows_per_example: the rows of x [rows, in] that share one example's signs.
  m.def("flipout_linear", &flipout_linear, py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
        py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt, py::arg("b_seed") = Seed{0, 0}, py::kw_only(),
        py::arg("x_seed"), py::arg("rows_per_example") = 1);
  m.def("flipout_linear_grad", &flipout_linear_grad, py::arg("dy"), py::arg("x"), py::arg("w_mu"), py::arg("w_rho"),
        py::arg("w_seed"), py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt,
        py::arg("b_seed") = Seed{0, 0}, py::kw_only(), py::arg("x_seed"), py::arg("rows_per_example") = 1);
  m.def("local_reparam_linear", &local_reparam_linear, py::arg("x"), py::arg("w_mu"), py::arg("w_rho"),
        py::arg("w_seed"), py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt,
        py::arg("b_seed") = Seed{0, 0}, py::kw_only(), py::arg("x_seed"));
  m.def("local_reparam_linear_grad", &local_reparam_linear_grad, py::arg("dy"), py::arg("x"), py::arg("w_mu"),
        py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt,
        py::arg("b_seed") = Seed{0, 0}, py::kw_only(), py::arg("x_seed"), py::arg("y_std"));
  m.def("estimator_signs", &estimator_signs, py::arg("x_seed"), py::arg("k"), py::arg("n"),
        "Elements [0, n) of the signs of stateless_fold_in(x_seed, k) (k = 0: s_in, 1: s_out).");
  m.def("estimator_seed", &estimator_seed, py::arg("x_seed"), py::arg("k"),
        "stateless_fold_in(x_seed, k) (k = 2: the seed of local reparameterization's eps_out).");
}

}  // namespace pyb
}  // namespace fusedbnn
