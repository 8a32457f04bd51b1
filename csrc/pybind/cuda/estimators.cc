// fusedbnn._core.cuda's per-example estimators of the linear layer on raw device pointers (see
// cuda.cc): the arguments of linear_forward / linear_backward, then x_seed, and local
// reparameterization's y_std. Scratch sizes take the estimator's name.
#include <string>

#include "core/estimators_cuda.h"
#include "pybind/cuda/cuda_binding.h"

namespace fusedbnn {
namespace pyb {
namespace {

LinearEstimator estimator_named(const std::string& name) {
  if (name == "flipout") return LinearEstimator::kFlipout;
  if (name == "local_reparameterization") return LinearEstimator::kLocalReparam;
  throw std::invalid_argument("estimator must be 'flipout' or 'local_reparameterization', got '" + name + "'");
}

}  // namespace

void register_cuda_estimators(py::module_& m) {
  m.def(
      "estimator_forward_scratch_bytes",
      [](const std::string& estimator, int64_t rows, int64_t in, int64_t out) {
        return cuda::estimator_forward_scratch_bytes(estimator_named(estimator),
                                                     linear_params(0, rows, in, out, 0, 0, {0, 0}, 0, 0, {0, 0}));
      },
      py::arg("estimator"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"));
  m.def(
      "estimator_backward_scratch_bytes",
      [](const std::string& estimator, int64_t rows, int64_t in, int64_t out) {
        return cuda::estimator_backward_scratch_bytes(estimator_named(estimator),
                                                      linear_params(0, rows, in, out, 0, 0, {0, 0}, 0, 0, {0, 0}));
      },
      py::arg("estimator"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"));
  m.def(
      "flipout_linear_forward",
      [](Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho,
         const Seed& b_seed, const Seed& x_seed, Ptr scratch, Ptr y, Ptr s, int64_t rows_per_example) {
        const LinearParams p = linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
        check(cuda::flipout_linear_forward(p, stream(x_seed), checked_rows_per_example(rows, rows_per_example),
                                           device<void>(scratch), device(y), as_stream(s)));
      },
      py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"), py::arg("w_rho"),
      py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("x_seed"), py::arg("scratch"),
      py::arg("y"), py::arg("stream") = 0, py::kw_only(), py::arg("rows_per_example") = 1,
      "y = x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b, signs per example of rows_per_example rows; b_mu = 0: "
      "no bias.");
  m.def(
      "flipout_linear_backward",
      [](Ptr dy, Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu,
         Ptr b_rho, const Seed& b_seed, const Seed& x_seed, Ptr scratch, Ptr dx, Ptr dw_mu, Ptr dw_rho, Ptr db_mu,
         Ptr db_rho, Ptr s, int64_t rows_per_example) {
        const auto g = device_grad_params<LinearGradParams>(
            linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed), dy, dx, dw_mu, dw_rho, db_mu,
            db_rho);
        check(cuda::flipout_linear_backward(g, stream(x_seed), checked_rows_per_example(rows, rows_per_example),
                                            device<void>(scratch), as_stream(s)));
      },
      py::arg("dy"), py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"),
      py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("x_seed"),
      py::arg("scratch"), py::arg("dx"), py::arg("dw_mu"), py::arg("dw_rho"), py::arg("db_mu"), py::arg("db_rho"),
      py::arg("stream") = 0, py::kw_only(), py::arg("rows_per_example") = 1);
  m.def(
      "local_reparam_linear_forward",
      [](Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho,
         const Seed& b_seed, const Seed& x_seed, Ptr scratch, Ptr y, Ptr y_std, Ptr s) {
        const LinearParams p = linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
        check(cuda::local_reparam_linear_forward(p, stream(x_seed), device<void>(scratch), device(y), device(y_std),
                                                 as_stream(s)));
      },
      py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"), py::arg("w_rho"),
      py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("x_seed"), py::arg("scratch"),
      py::arg("y"), py::arg("y_std"), py::arg("stream") = 0,
      "y = x mu^T + y_std * eps_out + b with y_std = sqrt(x^2 (sigma^2)^T); b_mu = 0: no bias.");
  m.def(
      "local_reparam_linear_backward",
      [](Ptr dy, Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu,
         Ptr b_rho, const Seed& b_seed, const Seed& x_seed, Ptr y_std, Ptr scratch, Ptr dx, Ptr dw_mu, Ptr dw_rho,
         Ptr db_mu, Ptr db_rho, Ptr s) {
        const auto g = device_grad_params<LinearGradParams>(
            linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed), dy, dx, dw_mu, dw_rho, db_mu,
            db_rho);
        check(cuda::local_reparam_linear_backward(g, stream(x_seed), device<const float>(y_std), device<void>(scratch),
                                                  as_stream(s)));
      },
      py::arg("dy"), py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"),
      py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("x_seed"),
      py::arg("y_std"), py::arg("scratch"), py::arg("dx"), py::arg("dw_mu"), py::arg("dw_rho"), py::arg("db_mu"),
      py::arg("db_rho"), py::arg("stream") = 0);
}

}  // namespace pyb
}  // namespace fusedbnn
