// fusedbnn._core.cuda's Embedding kernels on raw device pointers (see cuda.cc). The backward pass
// takes its gradient rows (distinct ids, their positions, and where each id's positions start) as
// device int64 arrays the caller built, as the TensorFlow GPU kernel builds them on the host.
#include "core/embedding_cuda.h"
#include "pybind/cuda/cuda_binding.h"

namespace fusedbnn {
namespace pyb {
namespace {

cuda::EmbeddingParams embedding_params(Ptr ids, bool ids_int64, int64_t count, int64_t num_embeddings, int64_t dim,
                                       Ptr w_mu, Ptr w_rho, const Seed& seed, int64_t padding_idx, float max_norm,
                                       float norm_type) {
  require_sizes({count, num_embeddings, dim});
  if (!(norm_type > 0.0f)) throw std::invalid_argument("norm_type must be positive");
  return cuda::EmbeddingParams{
      device<const void>(ids),    ids_int64,    count,       num_embeddings, dim,      device<const float>(w_mu),
      device<const float>(w_rho), stream(seed), padding_idx, max_norm,       norm_type};
}

}  // namespace

void register_cuda_embedding(py::module_& m) {
  m.def(
      "embedding_forward",
      [](Ptr ids, bool ids_int64, int64_t count, int64_t num_embeddings, int64_t dim, Ptr w_mu, Ptr w_rho,
         const Seed& seed, int64_t padding_idx, float max_norm, float norm_type, Ptr out, Ptr dw_drho, Ptr bad_id,
         Ptr s) {
        const auto p = embedding_params(ids, ids_int64, count, num_embeddings, dim, w_mu, w_rho, seed, padding_idx,
                                        max_norm, norm_type);
        check(cuda::embedding_forward(p, device(out), device(dw_drho), device<int>(bad_id), as_stream(s)));
      },
      py::arg("ids"), py::arg("ids_int64"), py::arg("count"), py::arg("num_embeddings"), py::arg("dim"),
      py::arg("w_mu"), py::arg("w_rho"), py::arg("seed"), py::arg("padding_idx"), py::arg("max_norm"),
      py::arg("norm_type"), py::arg("out"), py::arg("dw_drho"), py::arg("bad_id"), py::arg("stream") = 0,
      "out = W[ids] and dw_drho = eps * sigmoid(rho) of each looked-up element (for embedding_backward); "
      "padding_idx -1 for none; max_norm <= 0 for no rescaling; *bad_id (an int32, when not 0) = 1 on an "
      "out-of-range id.");
  m.def(
      "embedding_backward",
      [](Ptr rows, int64_t unique, Ptr positions, int64_t positions_size, Ptr starts, int64_t max_positions,
         int64_t count, int64_t num_embeddings, int64_t dim, Ptr w_mu, Ptr w_rho, const Seed& seed, int64_t padding_idx,
         float max_norm, float norm_type, Ptr dy, Ptr dw_drho, Ptr dw_mu, Ptr dw_rho, Ptr s) {
        require_sizes({unique, positions_size, max_positions});
        const cuda::EmbeddingGradParams p{
            embedding_params(0, true, count, num_embeddings, dim, w_mu, w_rho, seed, padding_idx, max_norm, norm_type),
            device<const float>(dy), device<const float>(dw_drho), device(dw_mu), device(dw_rho)};
        const cuda::EmbeddingGradRows r{device<const int64_t>(rows),      unique,
                                        device<const int64_t>(positions), positions_size,
                                        device<const int64_t>(starts),    max_positions};
        check(cuda::embedding_backward(p, r, as_stream(s)));
      },
      py::arg("rows"), py::arg("unique"), py::arg("positions"), py::arg("positions_size"), py::arg("starts"),
      py::arg("max_positions"), py::arg("count"), py::arg("num_embeddings"), py::arg("dim"), py::arg("w_mu"),
      py::arg("w_rho"), py::arg("seed"), py::arg("padding_idx"), py::arg("max_norm"), py::arg("norm_type"),
      py::arg("dy"), py::arg("dw_drho"), py::arg("dw_mu"), py::arg("dw_rho"), py::arg("stream") = 0,
      "dw_mu, dw_rho [unique, dim] for W[rows]; row u sums dy [count, dim] at positions[starts[u]:starts[u + 1]] "
      "(int64 device arrays), dw_rho = dw_mu * dw_drho (embedding_forward's); max_positions, the most positions "
      "of a row, sizes the blocks.");
}

}  // namespace pyb
}  // namespace fusedbnn
