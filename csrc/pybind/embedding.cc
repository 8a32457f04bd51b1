// fusedbnn._core: the Bayesian embedding kernels.

#include "core/embedding.h"

#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {
namespace {

using Ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

EmbeddingParams embedding_params(const Ids& ids, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                                 int64_t padding_idx, float max_norm, float norm_type) {
  if (w_mu.ndim() != 2) throw std::invalid_argument("w_mu must be 2-D");
  require_same_shape(w_mu, w_rho, "w_mu and w_rho");
  if (!(norm_type > 0.0f)) throw std::invalid_argument("norm_type must be positive");
  const int64_t rows = w_mu.shape(0);
  for (py::ssize_t n = 0; n < ids.size(); ++n) {
    if (ids.data()[n] < 0 || ids.data()[n] >= rows) throw std::invalid_argument("ids must be in [0, num_embeddings)");
  }
  return EmbeddingParams{ids.data(),     static_cast<int64_t>(ids.size()),
                         rows,           w_mu.shape(1),
                         w_mu.data(),    w_rho.data(),
                         stream(w_seed), padding_idx,
                         max_norm,       norm_type};
}

// (y, dw_drho), both [ids.size, dim].
py::tuple embedding(const Ids& ids, const Array& w_mu, const Array& w_rho, const Seed& w_seed, int64_t padding_idx,
                    float max_norm, float norm_type) {
  const EmbeddingParams p = embedding_params(ids, w_mu, w_rho, w_seed, padding_idx, max_norm, norm_type);
  Array y({p.count, p.dim}), dw_drho({p.count, p.dim});
  embedding_forward(serial_for(), p, y.mutable_data(), dw_drho.mutable_data());
  return py::make_tuple(y, dw_drho);
}

// (rows, dw_mu, dw_rho) for dy [ids.size, dim] and the forward pass's dw_drho.
py::tuple embedding_grad(const Array& dy, const Array& dw_drho, const Ids& ids, const Array& w_mu, const Array& w_rho,
                         const Seed& w_seed, int64_t padding_idx, float max_norm, float norm_type) {
  EmbeddingGradParams p{embedding_params(ids, w_mu, w_rho, w_seed, padding_idx, max_norm, norm_type)};
  for (const Array* a : {&dy, &dw_drho}) {
    if (a->ndim() != 2 || a->shape(0) != p.count || a->shape(1) != p.dim)
      throw std::invalid_argument("dy and dw_drho must be [ids.size, dim]");
  }
  const EmbeddingRows rows = embedding_rows(p);
  const int64_t unique = static_cast<int64_t>(rows.rows.size());
  Ids indices(unique);
  std::copy(rows.rows.begin(), rows.rows.end(), indices.mutable_data());
  Array dw_mu({unique, p.dim}), dw_rho({unique, p.dim});
  p.dy = dy.data();
  p.dw_drho = dw_drho.data();
  p.dw_mu = dw_mu.mutable_data();
  p.dw_rho = dw_rho.mutable_data();
  embedding_backward(serial_for(), p, rows);
  return py::make_tuple(indices, dw_mu, dw_rho);
}

}  // namespace

void register_embedding(py::module_& m) {
  m.def("embedding", &embedding, py::arg("ids"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"),
        py::arg("padding_idx") = -1, py::arg("max_norm") = 0.0f, py::arg("norm_type") = 2.0f);
  m.def("embedding_grad", &embedding_grad, py::arg("dy"), py::arg("dw_drho"), py::arg("ids"), py::arg("w_mu"),
        py::arg("w_rho"), py::arg("w_seed"), py::arg("padding_idx") = -1, py::arg("max_norm") = 0.0f,
        py::arg("norm_type") = 2.0f);
}

}  // namespace pyb
}  // namespace fusedbnn
