// fusedbnn._core: noise and Gaussian sampling kernels.
#include "core/gaussian.h"

#include "core/cpu_features.h"
#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {
namespace {

// Elements [begin, begin + n) of the seed's normal sequence.
Array normal(int64_t n, const Seed& seed, bool exact, int64_t begin) {
  if (n < 0 || begin < 0) throw std::invalid_argument("n and begin must be >= 0");
  Array out(n);
  const GaussianKernels& k = exact ? exact_kernels() : best_kernels();
  k.fill_normal(stream(seed), begin, begin + n, out.mutable_data());
  return out;
}

// With begin > 0 the arrays are elements [begin, begin + size) of a larger flat parameter: the
// kernels' 64-bit index math is tested past 2^31 without allocating that much.
void check_begin(int64_t begin) {
  if (begin < 0) throw std::invalid_argument("begin must be >= 0");
}

Array sample(const Array& mu, const Array& rho, const Seed& seed, int64_t begin) {
  require_same_shape(mu, rho, "mu and rho");
  check_begin(begin);
  Array w = empty_like(mu);
  best_kernels().sample(stream(seed), begin, begin + mu.size(), mu.data(), rho.data(), w.mutable_data());
  return w;
}

// (drho, w): drho = dw * eps * sigmoid(rho) and the regenerated sample.
py::tuple sample_grad(const Array& dw, const Array& mu, const Array& rho, const Seed& seed, int64_t begin) {
  require_same_shape(mu, rho, "mu and rho");
  require_same_shape(mu, dw, "mu and dw");
  check_begin(begin);
  Array drho = empty_like(mu), w = empty_like(mu);
  best_kernels().sample_grad(stream(seed), begin, begin + mu.size(), dw.data(), mu.data(), rho.data(),
                             drho.mutable_data(), w.mutable_data());
  return py::make_tuple(drho, w);
}

// The prior of the KL bindings: mu_prior a scalar (broadcast) or an array of mu's shape.
GaussianPrior prior_of(const Array& mu, const Array& mu_prior, float std_prior) {
  if (!(std_prior > 0.0f)) throw std::invalid_argument("std_prior must be positive");
  if (mu_prior.ndim() == 0) return {mu_prior.data(), false, std_prior};
  require_same_shape(mu, mu_prior, "mu and mu_prior");
  return {mu_prior.data(), true, std_prior};
}

float kl(const Array& mu, const Array& rho, const Seed& seed, const Array& mu_prior, float std_prior, int64_t begin) {
  require_same_shape(mu, rho, "mu and rho");
  check_begin(begin);
  const GaussianPrior prior = prior_of(mu, mu_prior, std_prior);
  if (begin == 0) return gaussian_kl(serial_for(), stream(seed), mu.size(), mu.data(), rho.data(), prior);
  return static_cast<float>(
      best_kernels().kl_sum(stream(seed), begin, begin + mu.size(), mu.data(), rho.data(), prior));
}

py::tuple kl_grad(const Array& mu, const Array& rho, const Seed& seed, const Array& mu_prior, float std_prior,
                  float dkl, int64_t begin) {
  require_same_shape(mu, rho, "mu and rho");
  check_begin(begin);
  Array dmu = empty_like(mu), drho = empty_like(mu);
  best_kernels().kl_grad(stream(seed), begin, begin + mu.size(), mu.data(), rho.data(),
                         prior_of(mu, mu_prior, std_prior), dkl, dmu.mutable_data(), drho.mutable_data());
  return py::make_tuple(dmu, drho);
}

float kl_analytic(const Array& mu, const Array& rho, const Array& mu_prior, float std_prior) {
  require_same_shape(mu, rho, "mu and rho");
  return gaussian_kl_analytic(serial_for(), mu.size(), mu.data(), rho.data(), prior_of(mu, mu_prior, std_prior));
}

py::tuple kl_analytic_grad(const Array& mu, const Array& rho, const Array& mu_prior, float std_prior, float dkl) {
  require_same_shape(mu, rho, "mu and rho");
  Array dmu = empty_like(mu), drho = empty_like(mu);
  gaussian_kl_analytic_grad(serial_for(), mu.size(), mu.data(), rho.data(), prior_of(mu, mu_prior, std_prior), dkl,
                            dmu.mutable_data(), drho.mutable_data());
  return py::make_tuple(dmu, drho);
}

}  // namespace

void register_gaussian(py::module_& m) {
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "Instruction set the CPU kernels run.");
  m.def(
      "stream_from_seed",
      [](const Seed& s) {
        const NoiseStream st = stream(s);
        return py::make_tuple(py::make_tuple(st.key[0], st.key[1]),
                              py::make_tuple(st.counter[0], st.counter[1], st.counter[2], st.counter[3]));
      },
      py::arg("seed"), "Philox key (2 x uint32) and counter (4 x uint32) of a [2] seed.");
  m.def(
      "eps_at", [](const Seed& s, uint64_t i) { return eps_at(stream(s), i); }, py::arg("seed"), py::arg("index"),
      "Element `index` of the seed's normal sequence, computed alone (exact scalar path).");
  m.def("normal", &normal, py::arg("n"), py::arg("seed"), py::arg("exact") = false, py::arg("begin") = 0,
        "Elements [begin, begin + n) of stateless_normal's flat sequence; exact=True: the libm path.");
  // begin: flat index of the arrays' first element in the parameter (the noise they get).
  m.def("sample_gaussian", &sample, py::arg("mu"), py::arg("rho"), py::arg("seed"), py::arg("begin") = 0);
  m.def("sample_gaussian_grad", &sample_grad, py::arg("dw"), py::arg("mu"), py::arg("rho"), py::arg("seed"),
        py::arg("begin") = 0);
  // mu_prior: a float (broadcast) or an array of mu's shape.
  m.def("gaussian_kl", &kl, py::arg("mu"), py::arg("rho"), py::arg("seed"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f, py::arg("begin") = 0);
  m.def("gaussian_kl_grad", &kl_grad, py::arg("mu"), py::arg("rho"), py::arg("seed"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f, py::arg("dkl") = 1.0f, py::arg("begin") = 0);
  m.def("gaussian_kl_analytic", &kl_analytic, py::arg("mu"), py::arg("rho"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f, "sum of KL(N(mu, softplus(rho)^2) || N(mu_prior, std_prior^2)), closed form.");
  m.def("gaussian_kl_analytic_grad", &kl_analytic_grad, py::arg("mu"), py::arg("rho"), py::arg("mu_prior") = 0.0f,
        py::arg("std_prior") = 0.1f, py::arg("dkl") = 1.0f);
}

}  // namespace pyb
}  // namespace fusedbnn
