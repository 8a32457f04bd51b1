// fusedbnn._core.cuda: the CUDA convolution kernels on raw device pointers (see cuda.cc). Every
// function takes the convolution's geometry as the NumPy conv2d does: x's and the kernel's shapes,
// stride, padding, explicit_paddings, dilation, groups, data_format.
#include <cuda_runtime_api.h>

#include "core/conv_cuda.h"
#include "pybind/common.h"
#include "pybind/conv_params.h"
#include "pybind/cuda/cuda_binding.h"

namespace fusedbnn {
namespace pyb {
namespace {

using Sizes = std::vector<int64_t>;

ConvParams device_params(const Sizes& x_shape, const Sizes& w_shape, const Pair& stride, const std::string& padding,
                         const Sizes& explicit_paddings, const Pair& dilation, int64_t groups,
                         const std::string& data_format) {
  ConvParams p = conv_shape_params(x_shape, w_shape, stride, padding, explicit_paddings, dilation, groups, data_format);
  if (const char* error = cuda::conv_size_error(p)) throw std::invalid_argument(error);
  return p;
}

// The parameters' pointers and seeds; b_mu = 0 means no bias.
void set_parameters(ConvParams* p, Ptr x, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho,
                    const Seed& b_seed) {
  p->x = device<const float>(x);
  p->w_mu = device<const float>(w_mu);
  p->w_rho = device<const float>(w_rho);
  p->w_stream = stream(w_seed);
  p->has_bias = b_mu != 0;
  p->b_mu = device<const float>(b_mu);
  p->b_rho = device<const float>(b_rho);
  p->b_stream = stream(b_seed);
}

}  // namespace

void register_cuda_conv(py::module_& m) {
  // The geometry arguments, after each function's own.
  const auto with_geometry = [](auto&&... leading) {
    return std::make_tuple(leading..., py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"), py::arg("padding"),
                           py::arg("explicit_paddings"), py::arg("dilation"), py::arg("groups"),
                           py::arg("data_format"));
  };
  std::apply(
      [&](auto&&... args) {
        m.def(
            "conv_output_shape",
            [](const Sizes& xs, const Sizes& ws, const Pair& st, const std::string& pad, const Sizes& ep,
               const Pair& dil, int64_t groups, const std::string& format) {
              return conv_output_shape(device_params(xs, ws, st, pad, ep, dil, groups, format));
            },
            args..., "y's shape; raises ValueError on invalid arguments or sizes the CUDA kernels do not take.");
      },
      with_geometry());
  std::apply(
      [&](auto&&... args) {
        m.def(
            "conv_forward_scratch_bytes",
            [](bool use_bias, const Sizes& xs, const Sizes& ws, const Pair& st, const std::string& pad, const Sizes& ep,
               const Pair& dil, int64_t groups, const std::string& format) {
              ConvParams p = device_params(xs, ws, st, pad, ep, dil, groups, format);
              p.has_bias = use_bias;
              return cuda::conv_forward_scratch_bytes(p);
            },
            args...);
        m.def(
            "conv_backward_scratch_bytes",
            [](bool use_bias, const Sizes& xs, const Sizes& ws, const Pair& st, const std::string& pad, const Sizes& ep,
               const Pair& dil, int64_t groups, const std::string& format) {
              ConvParams p = device_params(xs, ws, st, pad, ep, dil, groups, format);
              p.has_bias = use_bias;
              return cuda::conv_backward_scratch_bytes(p);
            },
            args...);
      },
      with_geometry(py::arg("use_bias")));
  std::apply(
      [&](auto&&... args) {
        m.def(
            "conv_forward",
            [](Ptr x, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho, const Seed& b_seed, Ptr scratch,
               Ptr y, Ptr s, const Sizes& xs, const Sizes& ws, const Pair& st, const std::string& pad, const Sizes& ep,
               const Pair& dil, int64_t groups, const std::string& format) {
              ConvParams p = device_params(xs, ws, st, pad, ep, dil, groups, format);
              set_parameters(&p, x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
              check(cuda::conv_forward(p, device<void>(scratch), device(y), as_stream(s)));
            },
            args..., "y in x's layout; b_mu = 0 means no bias.");
      },
      with_geometry(py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"),
                    py::arg("b_rho"), py::arg("b_seed"), py::arg("scratch"), py::arg("y"), py::arg("stream")));
  std::apply(
      [&](auto&&... args) {
        m.def(
            "conv_backward",
            [](Ptr dy, Ptr x, Ptr w_mu, Ptr w_rho, const Seed& w_seed, Ptr b_mu, Ptr b_rho, const Seed& b_seed,
               Ptr scratch, Ptr dx, Ptr dw_mu, Ptr dw_rho, Ptr db_mu, Ptr db_rho, Ptr s, const Sizes& xs,
               const Sizes& ws, const Pair& st, const std::string& pad, const Sizes& ep, const Pair& dil,
               int64_t groups, const std::string& format) {
              auto p = device_grad_params<ConvGradParams>(device_params(xs, ws, st, pad, ep, dil, groups, format), dy,
                                                          dx, dw_mu, dw_rho, db_mu, db_rho);
              set_parameters(&p, x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
              check(cuda::conv_backward(p, device<void>(scratch), as_stream(s)));
            },
            args..., "dx, dw_mu, dw_rho, db_mu, db_rho (the bias ones unused without bias).");
      },
      with_geometry(py::arg("dy"), py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"),
                    py::arg("b_rho"), py::arg("b_seed"), py::arg("scratch"), py::arg("dx"), py::arg("dw_mu"),
                    py::arg("dw_rho"), py::arg("db_mu"), py::arg("db_rho"), py::arg("stream")));
}

}  // namespace pyb
}  // namespace fusedbnn
