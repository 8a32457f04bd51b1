// fusedbnn._core.cuda LSTM: lstm_forward / lstm_backward on raw device pointers (see cuda.cc).
#include "core/lstm_cuda.h"
#include "pybind/cuda/cuda_binding.h"

namespace fusedbnn {
namespace pyb {
namespace {

LstmParams lstm_params(Ptr x, int64_t batch, int64_t steps, int64_t in, int64_t hidden, Ptr w_mu, Ptr w_rho,
                       const Seed& w_seed, Ptr b_mu, Ptr b_rho, const Seed& b_seed, Ptr h0, Ptr c0) {
  require_sizes({batch, steps, in});
  if (hidden <= 0) throw std::invalid_argument("hidden must be > 0");
  return LstmParams{device<const float>(x),
                    batch,
                    steps,
                    in,
                    hidden,
                    device<const float>(w_mu),
                    device<const float>(w_rho),
                    stream(w_seed),
                    device<const float>(b_mu),
                    device<const float>(b_rho),
                    stream(b_seed),
                    device<const float>(h0),
                    device<const float>(c0)};
}

LstmParams sizes_only(int64_t batch, int64_t steps, int64_t in, int64_t hidden) {
  return lstm_params(0, batch, steps, in, hidden, 0, 0, {0, 0}, 0, 0, {0, 0}, 0, 0);
}

}  // namespace

void register_cuda_lstm(py::module_& m) {
  m.def(
      "lstm_forward_scratch_bytes",
      [](int64_t batch, int64_t steps, int64_t in, int64_t hidden) {
        return cuda::lstm_forward_scratch_bytes(sizes_only(batch, steps, in, hidden));
      },
      py::arg("batch"), py::arg("steps"), py::arg("in_features"), py::arg("hidden"));
  m.def(
      "lstm_backward_scratch_bytes",
      [](int64_t batch, int64_t steps, int64_t in, int64_t hidden) {
        return cuda::lstm_backward_scratch_bytes(sizes_only(batch, steps, in, hidden));
      },
      py::arg("batch"), py::arg("steps"), py::arg("in_features"), py::arg("hidden"));
  m.def(
      "lstm_forward",
      [](Ptr x, int64_t batch, int64_t steps, int64_t in, int64_t hidden, Ptr w_mu, Ptr w_rho, const Seed& w_seed,
         Ptr b_mu, Ptr b_rho, const Seed& b_seed, Ptr h0, Ptr c0, Ptr w, Ptr gates, Ptr cells, Ptr scratch, Ptr h_seq,
         Ptr h_last, Ptr c_last, Ptr s) {
        const LstmParams p = lstm_params(x, batch, steps, in, hidden, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0);
        check(cuda::lstm_forward(p, LstmSaved{device(w), device(gates), device(cells)}, device<void>(scratch),
                                 device(h_seq), device(h_last), device(c_last), as_stream(s)));
      },
      py::arg("x"), py::arg("batch"), py::arg("steps"), py::arg("in_features"), py::arg("hidden"), py::arg("w_mu"),
      py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"), py::arg("h0"),
      py::arg("c0"), py::arg("w"), py::arg("gates"), py::arg("cells"), py::arg("scratch"), py::arg("h_seq"),
      py::arg("h_last"), py::arg("c_last"), py::arg("stream") = 0,
      "x [batch, steps, in], W [in + hidden, 4 hidden], gate order f, i, c, o; fills h_seq, h_last, c_last and "
      "the saved w, gates (activated), cells.");
  m.def(
      "lstm_backward",
      [](Ptr dh_seq, Ptr dh_last, Ptr dc_last, Ptr x, int64_t batch, int64_t steps, int64_t in, int64_t hidden,
         Ptr w_rho, const Seed& w_seed, Ptr b_rho, const Seed& b_seed, Ptr h0, Ptr c0, Ptr h_seq, Ptr w, Ptr gates,
         Ptr cells, Ptr dz, Ptr scratch, Ptr dx, Ptr dw_mu, Ptr dw_rho, Ptr db_mu, Ptr db_rho, Ptr dh0, Ptr dc0,
         Ptr s) {
        const LstmParams p = lstm_params(x, batch, steps, in, hidden, 0, w_rho, w_seed, 0, b_rho, b_seed, h0, c0);
        const LstmForwardResult fwd{device<const float>(w), device<const float>(gates), device<const float>(cells),
                                    device<const float>(h_seq)};
        const LstmGradParams grad{p,
                                  fwd,
                                  device<const float>(dh_seq),
                                  device<const float>(dh_last),
                                  device<const float>(dc_last),
                                  device(dx),
                                  device(dh0),
                                  device(dc0),
                                  device(dw_mu),
                                  device(dw_rho),
                                  device(db_mu),
                                  device(db_rho)};
        check(cuda::lstm_backward(grad, device(dz), device<void>(scratch), as_stream(s)));
      },
      py::arg("dh_seq"), py::arg("dh_last"), py::arg("dc_last"), py::arg("x"), py::arg("batch"), py::arg("steps"),
      py::arg("in_features"), py::arg("hidden"), py::arg("w_rho"), py::arg("w_seed"), py::arg("b_rho"),
      py::arg("b_seed"), py::arg("h0"), py::arg("c0"), py::arg("h_seq"), py::arg("w"), py::arg("gates"),
      py::arg("cells"), py::arg("dz"), py::arg("scratch"), py::arg("dx"), py::arg("dw_mu"), py::arg("dw_rho"),
      py::arg("db_mu"), py::arg("db_rho"), py::arg("dh0"), py::arg("dc0"), py::arg("stream") = 0,
      "BPTT from the forward's saved h_seq, w, gates, cells; dz [batch, steps, 4 hidden] may be gates itself.");
}

}  // namespace pyb
}  // namespace fusedbnn
