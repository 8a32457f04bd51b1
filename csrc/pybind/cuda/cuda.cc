// fusedbnn._core.cuda: the CUDA kernels on raw device pointers (integers, e.g. a PyTorch tensor's
// data_ptr()) and a raw cudaStream_t (0: the legacy default stream). Functions enqueue work and
// return at once; sizes are in elements. Built only with -DFUSEDBNN_CUDA=ON.
#include <cuda_runtime_api.h>

#include "core/gaussian_cuda.h"
#include "core/linear_cuda.h"
#include "pybind/common.h"
#include "pybind/cuda/cuda_binding.h"

namespace fusedbnn {
namespace pyb {
LinearParams linear_params(Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed,
                           Ptr b_mu, Ptr b_rho, const Seed& b_seed) {
  require_sizes({rows, in, out});
  return LinearParams{device<const float>(x),
                      rows,
                      in,
                      out,
                      device<const float>(w_mu),
                      device<const float>(w_rho),
                      stream(w_seed),
                      b_mu != 0,
                      device<const float>(b_mu),
                      device<const float>(b_rho),
                      stream(b_seed)};
}

void register_cuda(py::module_& parent) {
  py::module_ m = parent.def_submodule("cuda", "The CUDA kernels on raw device pointers (float32).");
  m.def("driver_error", &cuda::driver_error,
        "Why this machine's driver cannot run the kernels (their CUDA runtime is newer), or '' when it can.");
  m.def(
      "normal",
      [](Ptr out, int64_t n, const Seed& seed, Ptr s) {
        require_sizes({n});
        check(cuda::fill_normal(stream(seed), n, device(out), as_stream(s)));
      },
      py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("stream") = 0, "out[i] = eps(seed, i) for i < n.");
  m.def(
      "sample_gaussian",
      [](Ptr mu, Ptr rho, Ptr w, int64_t n, const Seed& seed, Ptr s) {
        require_sizes({n});
        check(cuda::sample_gaussian(stream(seed), n, device<const float>(mu), device<const float>(rho), device(w),
                                    as_stream(s)));
      },
      py::arg("mu"), py::arg("rho"), py::arg("w"), py::arg("n"), py::arg("seed"), py::arg("stream") = 0);
  m.def(
      "sample_gaussian_grad",
      [](Ptr dw, Ptr mu, Ptr rho, Ptr drho, Ptr w, int64_t n, const Seed& seed, Ptr s) {
        require_sizes({n});
        check(cuda::sample_gaussian_grad(stream(seed), n, device<const float>(dw), device<const float>(mu),
                                         device<const float>(rho), device(drho), device(w), as_stream(s)));
      },
      py::arg("dw"), py::arg("mu"), py::arg("rho"), py::arg("drho"), py::arg("w"), py::arg("n"), py::arg("seed"),
      py::arg("stream") = 0, "drho = dw * eps * sigmoid(rho); w = mu + softplus(rho) * eps unless w is 0.");
  m.def("gaussian_kl_scratch_bytes", &cuda::gaussian_kl_scratch_bytes);
  // mu_prior: a device pointer to one float, or (per_element_prior) to n floats.
  m.def(
      "gaussian_kl",
      [](Ptr mu, Ptr rho, int64_t n, const Seed& seed, Ptr mu_prior, float std_prior, Ptr scratch, Ptr kl, Ptr s,
         bool per_element_prior) {
        require_sizes({n});
        const GaussianPrior prior{device<const float>(mu_prior), per_element_prior, std_prior};
        check(cuda::gaussian_kl(stream(seed), n, device<const float>(mu), device<const float>(rho), prior,
                                device<void>(scratch), device(kl), as_stream(s)));
      },
      py::arg("mu"), py::arg("rho"), py::arg("n"), py::arg("seed"), py::arg("mu_prior"), py::arg("std_prior"),
      py::arg("scratch"), py::arg("kl"), py::arg("stream") = 0, py::arg("per_element_prior") = false);
  m.def(
      "gaussian_kl_grad",
      [](Ptr mu, Ptr rho, int64_t n, const Seed& seed, Ptr mu_prior, float std_prior, Ptr dkl, Ptr dmu, Ptr drho, Ptr s,
         bool per_element_prior) {
        require_sizes({n});
        const GaussianPrior prior{device<const float>(mu_prior), per_element_prior, std_prior};
        check(cuda::gaussian_kl_grad(stream(seed), n, device<const float>(mu), device<const float>(rho), prior,
                                     device<const float>(dkl), device(dmu), device(drho), as_stream(s)));
      },
      py::arg("mu"), py::arg("rho"), py::arg("n"), py::arg("seed"), py::arg("mu_prior"), py::arg("std_prior"),
      py::arg("dkl"), py::arg("dmu"), py::arg("drho"), py::arg("stream") = 0, py::arg("per_element_prior") = false);
  m.def(
      "gaussian_kl_analytic",
      [](Ptr mu, Ptr rho, int64_t n, Ptr mu_prior, float std_prior, Ptr scratch, Ptr kl, Ptr s,
         bool per_element_prior) {
        require_sizes({n});
        const GaussianPrior prior{device<const float>(mu_prior), per_element_prior, std_prior};
        check(cuda::gaussian_kl_analytic(n, device<const float>(mu), device<const float>(rho), prior,
                                         device<void>(scratch), device(kl), as_stream(s)));
      },
      py::arg("mu"), py::arg("rho"), py::arg("n"), py::arg("mu_prior"), py::arg("std_prior"), py::arg("scratch"),
      py::arg("kl"), py::arg("stream") = 0, py::arg("per_element_prior") = false);
  m.def(
      "gaussian_kl_analytic_grad",
      [](Ptr mu, Ptr rho, int64_t n, Ptr mu_prior, float std_prior, Ptr dkl, Ptr dmu, Ptr drho, Ptr s,
         bool per_element_prior) {
        require_sizes({n});
        const GaussianPrior prior{device<const float>(mu_prior), per_element_prior, std_prior};
        check(cuda::gaussian_kl_analytic_grad(n, device<const float>(mu), device<const float>(rho), prior,
                                              device<const float>(dkl), device(dmu), device(drho), as_stream(s)));
      },
      py::arg("mu"), py::arg("rho"), py::arg("n"), py::arg("mu_prior"), py::arg("std_prior"), py::arg("dkl"),
      py::arg("dmu"), py::arg("drho"), py::arg("stream") = 0, py::arg("per_element_prior") = false);

  m.def(
      "linear_forward_scratch_bytes",
      [](int64_t rows, int64_t in, int64_t out) {
        return cuda::linear_forward_scratch_bytes(linear_params(0, rows, in, out, 0, 0, {0, 0}, 0, 0, {0, 0}));
      },
      py::arg("rows"), py::arg("in_features"), py::arg("out_features"));
  m.def(
      "linear_backward_scratch_bytes",
      [](int64_t rows, int64_t in, int64_t out) {
        return cuda::linear_backward_scratch_bytes(linear_params(0, rows, in, out, 0, 0, {0, 0}, 0, 0, {0, 0}));
      },
      py::arg("rows"), py::arg("in_features"), py::arg("out_features"));
  m.def(
      "linear_forward",
      [](Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho,
         const Seed& b_seed, Ptr scratch, Ptr y, Ptr s) {
        const LinearParams p = linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
        check(cuda::linear_forward(p, device<void>(scratch), device(y), as_stream(s)));
      },
      py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"), py::arg("w_rho"),
      py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("scratch"), py::arg("y"),
      py::arg("stream") = 0, "y = x W^T + b; b_mu = 0 means no bias.");
  m.def(
      "linear_backward",
      [](Ptr dy, Ptr x, int64_t rows, int64_t in, int64_t out, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu,
         Ptr b_rho, const Seed& b_seed, Ptr scratch, Ptr dx, Ptr dw_mu, Ptr dw_rho, Ptr db_mu, Ptr db_rho, Ptr s) {
        const auto p = device_grad_params<LinearGradParams>(
            linear_params(x, rows, in, out, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed), dy, dx, dw_mu, dw_rho, db_mu,
            db_rho);
        check(cuda::linear_backward(p, device<void>(scratch), as_stream(s)));
      },
      py::arg("dy"), py::arg("x"), py::arg("rows"), py::arg("in_features"), py::arg("out_features"), py::arg("w_mu"),
      py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("scratch"),
      py::arg("dx"), py::arg("dw_mu"), py::arg("dw_rho"), py::arg("db_mu"), py::arg("db_rho"), py::arg("stream") = 0);

  register_cuda_conv(m);
  register_cuda_embedding(m);
  register_cuda_estimators(m);
  register_cuda_lstm(m);
}

}  // namespace pyb
}  // namespace fusedbnn
