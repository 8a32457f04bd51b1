// fusedbnn._core: the framework-free CPU kernels on NumPy arrays, for tests without TensorFlow.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "core/cpu_features.h"
#include "core/gaussian.h"
#include "core/linear.h"

namespace py = pybind11;

namespace fusedbnn {
namespace {

using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Seed = std::pair<int64_t, int64_t>;

NoiseStream stream(const Seed& seed) { return stream_from_seed(seed.first, seed.second); }

Array empty_like(const Array& a) { return Array(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim())); }

void require_same_shape(const Array& a, const Array& b, const char* what) {
  if (a.ndim() != b.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), b.shape()))
    throw std::invalid_argument(std::string(what) + " must have the same shape");
}

Array normal(int64_t n, const Seed& seed, bool exact) {
  if (n < 0) throw std::invalid_argument("n must be >= 0");
  Array out(n);
  fill_normal(serial_for(), exact ? exact_kernels() : best_kernels(), stream(seed), n, out.mutable_data());
  return out;
}

Array sample(const Array& mu, const Array& rho, const Seed& seed) {
  require_same_shape(mu, rho, "mu and rho");
  Array w = empty_like(mu);
  sample_gaussian(serial_for(), stream(seed), mu.size(), mu.data(), rho.data(), w.mutable_data());
  return w;
}

// (drho, w): drho = dw * eps * sigmoid(rho) and the regenerated sample.
py::tuple sample_grad(const Array& dw, const Array& mu, const Array& rho, const Seed& seed) {
  require_same_shape(mu, rho, "mu and rho");
  require_same_shape(mu, dw, "mu and dw");
  Array drho = empty_like(mu), w = empty_like(mu);
  sample_gaussian_grad(serial_for(), stream(seed), mu.size(), dw.data(), mu.data(), rho.data(),
                       drho.mutable_data(), w.mutable_data());
  return py::make_tuple(drho, w);
}

float kl(const Array& mu, const Array& rho, const Seed& seed, float mu_prior, float std_prior) {
  require_same_shape(mu, rho, "mu and rho");
  return gaussian_kl(serial_for(), stream(seed), mu.size(), mu.data(), rho.data(), mu_prior, std_prior);
}

py::tuple kl_grad(const Array& mu, const Array& rho, const Seed& seed, float mu_prior, float std_prior, float dkl) {
  require_same_shape(mu, rho, "mu and rho");
  Array dmu = empty_like(mu), drho = empty_like(mu);
  gaussian_kl_grad(serial_for(), stream(seed), mu.size(), mu.data(), rho.data(), mu_prior, std_prior, dkl,
                   dmu.mutable_data(), drho.mutable_data());
  return py::make_tuple(dmu, drho);
}

LinearParams linear_params(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                           const std::optional<Array>& b_mu, const std::optional<Array>& b_rho,
                           const Seed& b_seed) {
  if (x.ndim() != 2 || w_mu.ndim() != 2) throw std::invalid_argument("x and w_mu must be 2-D");
  require_same_shape(w_mu, w_rho, "w_mu and w_rho");
  if (x.shape(1) != w_mu.shape(1)) throw std::invalid_argument("x's columns must equal w_mu's in-features");
  LinearParams p{x.data(), x.shape(0), w_mu.shape(1), w_mu.shape(0), w_mu.data(), w_rho.data(), stream(w_seed),
                 b_mu.has_value(), nullptr, nullptr, stream(b_seed)};
  if (p.has_bias) {
    if (!b_rho || b_mu->ndim() != 1 || b_mu->shape(0) != p.out) throw std::invalid_argument("bias must be [out]");
    require_same_shape(*b_mu, *b_rho, "b_mu and b_rho");
    p.b_mu = b_mu->data();
    p.b_rho = b_rho->data();
  }
  return p;
}

Array linear(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
             const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  Array y({p.rows, p.out}), w({p.out, p.in}), b(p.has_bias ? p.out : 0);
  linear_forward(serial_for(), p, w.mutable_data(), b.mutable_data(), y.mutable_data());
  return y;
}

// (dx, dw_mu, dw_rho, db_mu, db_rho); the bias gradients are empty without a bias.
py::tuple linear_grad(const Array& dy, const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                      const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed) {
  const LinearParams p = linear_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed);
  if (dy.ndim() != 2 || dy.shape(0) != p.rows || dy.shape(1) != p.out) throw std::invalid_argument("dy must be [rows, out]");
  const int64_t nb = p.has_bias ? p.out : 0;
  Array dx({p.rows, p.in}), dw_mu({p.out, p.in}), dw_rho({p.out, p.in}), w({p.out, p.in}), db_mu(nb), db_rho(nb);
  linear_backward(serial_for(), p, dy.data(), w.mutable_data(), dx.mutable_data(), dw_mu.mutable_data(),
                  dw_rho.mutable_data(), db_mu.mutable_data(), db_rho.mutable_data());
  return py::make_tuple(dx, dw_mu, dw_rho, db_mu, db_rho);
}

}  // namespace
}  // namespace fusedbnn

PYBIND11_MODULE(_core, m) {
  using namespace fusedbnn;
  m.doc() = "fusedbnn's framework-free CPU kernels on NumPy arrays (float32, single-threaded).";
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "Instruction set the CPU kernels run.");
  m.def("stream_from_seed", [](const Seed& s) {
        const NoiseStream st = stream(s);
        return py::make_tuple(py::make_tuple(st.key[0], st.key[1]),
                              py::make_tuple(st.counter[0], st.counter[1], st.counter[2], st.counter[3]));
      }, py::arg("seed"), "Philox key (2 x uint32) and counter (4 x uint32) of a [2] seed.");
  m.def("eps_at", [](const Seed& s, uint64_t i) { return eps_at(stream(s), i); }, py::arg("seed"), py::arg("index"),
        "Element `index` of the seed's normal sequence, computed alone (exact scalar path).");
  m.def("normal", &normal, py::arg("n"), py::arg("seed"), py::arg("exact") = false,
        "n standard normals of stateless_normal([n], seed); exact=True uses the libm path.");
  m.def("sample_gaussian", &sample, py::arg("mu"), py::arg("rho"), py::arg("seed"));
  m.def("sample_gaussian_grad", &sample_grad, py::arg("dw"), py::arg("mu"), py::arg("rho"), py::arg("seed"));
  m.def("gaussian_kl", &kl, py::arg("mu"), py::arg("rho"), py::arg("seed"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f);
  m.def("gaussian_kl_grad", &kl_grad, py::arg("mu"), py::arg("rho"), py::arg("seed"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f, py::arg("dkl") = 1.0f);
  m.def("linear", &linear, py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
        py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt, py::arg("b_seed") = Seed{0, 0});
  m.def("linear_grad", &linear_grad, py::arg("dy"), py::arg("x"), py::arg("w_mu"), py::arg("w_rho"),
        py::arg("w_seed"), py::arg("b_mu") = std::nullopt, py::arg("b_rho") = std::nullopt,
        py::arg("b_seed") = Seed{0, 0});
}
