// fusedbnn._core: the Bayesian 2-D convolution kernels (NHWC or NCHW, kernel [kh, kw, in/groups, out]).
#include "core/conv.h"

#include <optional>

#include "pybind/common.h"
#include "pybind/conv_params.h"

namespace fusedbnn {
namespace pyb {
namespace {

ConvPadding padding_mode(const std::string& padding, const std::vector<int64_t>& explicit_paddings) {
  if (padding == "VALID") return ConvPadding::kValid;
  if (padding == "SAME") return ConvPadding::kSame;
  if (padding != "EXPLICIT") throw std::invalid_argument("padding must be VALID, SAME or EXPLICIT, got " + padding);
  if (explicit_paddings.size() != 4)
    throw std::invalid_argument("explicit_paddings must be [top, bottom, left, right]");
  return ConvPadding::kExplicit;
}

}  // namespace

ConvParams conv_shape_params(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                             const Pair& stride, const std::string& padding,
                             const std::vector<int64_t>& explicit_paddings, const Pair& dilation, int64_t groups,
                             const std::string& data_format) {
  if (x_shape.size() != 4 || w_shape.size() != 4) throw std::invalid_argument("x and w_mu must be 4-D");
  if (data_format != "NHWC" && data_format != "NCHW") throw std::invalid_argument("data_format must be NHWC or NCHW");
  if (stride.first < 1 || stride.second < 1 || dilation.first < 1 || dilation.second < 1 || groups < 1)
    throw std::invalid_argument("stride, dilation and groups must be positive");
  for (int d = 0; d < 4; ++d)
    if (w_shape[d] < 1) throw std::invalid_argument("w_mu's sizes must be positive");
  for (int d = 0; d < 4; ++d)
    if (x_shape[d] < 0) throw std::invalid_argument("x's sizes must be non-negative");
  const bool channels_last = data_format == "NHWC";
  ConvParams p{};
  p.batch = x_shape[0];
  p.in_h = x_shape[channels_last ? 1 : 2];
  p.in_w = x_shape[channels_last ? 2 : 3];
  p.in_channels = x_shape[channels_last ? 3 : 1];
  p.out_channels = w_shape[3];
  if (p.in_channels != w_shape[2] * groups || p.out_channels % groups != 0)
    throw std::invalid_argument("x's channels must be w_mu's in/groups times groups, and groups must divide out");
  p.kernel_h = w_shape[0];
  p.kernel_w = w_shape[1];
  p.stride_h = stride.first, p.stride_w = stride.second;
  p.dilation_h = dilation.first, p.dilation_w = dilation.second;
  const ConvPadding mode = padding_mode(padding, explicit_paddings);
  const auto pad = [&](int i) { return mode == ConvPadding::kExplicit ? explicit_paddings[i] : 0; };
  std::string error =
      conv_axis(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, mode, pad(0), pad(1), &p.out_h, &p.pad_top);
  if (error.empty())
    error = conv_axis(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, mode, pad(2), pad(3), &p.out_w, &p.pad_left);
  if (!error.empty()) throw std::invalid_argument(error);
  p.groups = groups;
  p.channels_last = channels_last;
  return p;
}

std::vector<py::ssize_t> conv_output_shape(const ConvParams& p) {
  if (p.channels_last) return {p.batch, p.out_h, p.out_w, p.out_channels};
  return {p.batch, p.out_channels, p.out_h, p.out_w};
}

namespace {

ConvParams conv_params(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                       const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed,
                       const Pair& stride, const std::string& padding, const std::vector<int64_t>& explicit_paddings,
                       const Pair& dilation, int64_t groups, const std::string& data_format) {
  if (x.ndim() != 4 || w_mu.ndim() != 4) throw std::invalid_argument("x and w_mu must be 4-D");
  require_same_shape(w_mu, w_rho, "w_mu and w_rho");
  ConvParams p = conv_shape_params({x.shape(), x.shape() + 4}, {w_mu.shape(), w_mu.shape() + 4}, stride, padding,
                                   explicit_paddings, dilation, groups, data_format);
  p.x = x.data();
  p.w_mu = w_mu.data();
  p.w_rho = w_rho.data();
  p.w_stream = stream(w_seed);
  p.has_bias = b_mu.has_value();
  p.b_stream = stream(b_seed);
  if (p.has_bias) {
    if (!b_rho || b_mu->ndim() != 1 || b_mu->shape(0) != p.out_channels)
      throw std::invalid_argument("bias must be [out]");
    require_same_shape(*b_mu, *b_rho, "b_mu and b_rho");
    p.b_mu = b_mu->data();
    p.b_rho = b_rho->data();
  }
  return p;
}

Array conv2d(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
             const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed,
             const Pair& stride, const std::string& padding, const std::vector<int64_t>& explicit_paddings,
             const Pair& dilation, int64_t groups, const std::string& data_format) {
  const ConvParams p = conv_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, stride, padding, explicit_paddings,
                                   dilation, groups, data_format);
  Array y(conv_output_shape(p)), workspace(conv_forward_workspace(p));
  conv_forward(serial_for(), p, workspace.mutable_data(), y.mutable_data());
  return y;
}

// (dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are empty without a bias.
py::tuple conv2d_grad(const Array& dy, const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                      const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed,
                      const Pair& stride, const std::string& padding, const std::vector<int64_t>& explicit_paddings,
                      const Pair& dilation, int64_t groups, const std::string& data_format) {
  const ConvParams p = conv_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, stride, padding, explicit_paddings,
                                   dilation, groups, data_format);
  const auto y_shape = conv_output_shape(p);
  if (dy.ndim() != 4 || !std::equal(y_shape.begin(), y_shape.end(), dy.shape()))
    throw std::invalid_argument("dy must have the output's shape");
  const int64_t nb = p.has_bias ? p.out_channels : 0;
  Array dx = empty_like(x), dw_mu = empty_like(w_mu), dw_rho = empty_like(w_mu), db_mu(nb), db_rho(nb);
  Array workspace(conv_backward_workspace(p));
  conv_backward(serial_for(), grad_params<ConvGradParams>(p, dy, dx, dw_mu, dw_rho, db_mu, db_rho),
                workspace.mutable_data());
  return py::make_tuple(dx, dw_mu, dw_rho, db_mu, db_rho);
}

}  // namespace

void register_conv(py::module_& m) {
  const auto common = [](auto&&... leading) {
    return std::make_tuple(leading..., py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
                           py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt,
                           py::arg("b_seed") = Seed{0, 0}, py::arg("stride") = Pair{1, 1}, py::arg("padding") = "VALID",
                           py::arg("explicit_paddings") = std::vector<int64_t>{}, py::arg("dilation") = Pair{1, 1},
                           py::arg("groups") = 1, py::arg("data_format") = "NHWC");
  };
  std::apply([&](auto&&... args) { m.def("conv2d", &conv2d, args...); }, common());
  std::apply([&](auto&&... args) { m.def("conv2d_grad", &conv2d_grad, args...); }, common(py::arg("dy")));
}

}  // namespace pyb
}  // namespace fusedbnn
