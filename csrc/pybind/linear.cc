// fusedbnn._core: the Bayesian linear kernels.
#include "core/linear.h"

#include <optional>

#include "pybind/common.h"
#include "pybind/linear_params.h"

namespace fusedbnn {
namespace pyb {
LinearParams linear_params(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                           const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed) {
  if (x.ndim() != 2 || w_mu.ndim() != 2) throw std::invalid_argument("x and w_mu must be 2-D");
  require_same_shape(w_mu, w_rho, "w_mu and w_rho");
  if (x.shape(1) != w_mu.shape(1)) throw std::invalid_argument("x's columns must equal w_mu's in-features");
  LinearParams p{x.data(),       x.shape(0),       w_mu.shape(1), w_mu.shape(0), w_mu.data(),   w_rho.data(),
                 stream(w_seed), b_mu.has_value(), nullptr,       nullptr,       stream(b_seed)};
  if (p.has_bias) {
    if (!b_rho || b_mu->ndim() != 1 || b_mu->shape(0) != p.out) throw std::invalid_argument("bias must be [out]");
    require_same_shape(*b_mu, *b_rho, "b_mu and b_rho");
    p.b_mu = b_mu->data();
    p.b_rho = b_rho->data();
  }
  return p;
}

LinearGradArrays::LinearGradArrays(const LinearParams& p, const Array& dy)
    : dx({p.rows, p.in}), dw_mu({p.out, p.in}), dw_rho({p.out, p.in}), db_mu(p.has_bias ? p.out : 0),
      db_rho(p.has_bias ? p.out : 0) {
  if (dy.ndim() != 2 || dy.shape(0) != p.rows || dy.shape(1) != p.out)
    throw std::invalid_argument("dy must be [rows, out]");
}

LinearGradParams LinearGradArrays::params(const LinearParams& p, const Array& dy) {
  return grad_params<LinearGradParams>(p, dy, dx, dw_mu, dw_rho, db_mu, db_rho);
}

namespace {

Array linear(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
             const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  Array y({p.rows, p.out});
  linear_forward(serial_for(), p, y.mutable_data());
  return y;
}

// (dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are empty without a bias.
py::tuple linear_grad(const Array& dy, const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                      const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  LinearGradArrays grads(p, dy);
  linear_backward(serial_for(), grads.params(p, dy));
  return grads.tuple();
}

}  // namespace

void register_linear(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
        py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt, py::arg("b_seed") = Seed{0, 0});
  m.def("linear_grad", &linear_grad, py::arg("dy"), py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
        py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt, py::arg("b_seed") = Seed{0, 0});
}

}  // namespace pyb
}  // namespace fusedbnn
