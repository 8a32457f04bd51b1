// fusedbnn._core: the Bayesian LSTM kernels.
#include "core/lstm.h"

#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {
namespace {

LstmParams lstm_params(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed, const Array& b_mu,
                       const Array& b_rho, const Seed& b_seed, const Array& h0, const Array& c0) {
  if (x.ndim() != 3 || w_mu.ndim() != 2 || b_mu.ndim() != 1)
    throw std::invalid_argument("x must be 3-D, w_mu 2-D, b_mu 1-D");
  require_same_shape(w_mu, w_rho, "w_mu and w_rho");
  require_same_shape(b_mu, b_rho, "b_mu and b_rho");
  require_same_shape(h0, c0, "h0 and c0");
  const int64_t hidden = w_mu.shape(1) / 4;
  if (hidden == 0 || w_mu.shape(1) != 4 * hidden || w_mu.shape(0) != x.shape(2) + hidden || b_mu.shape(0) != 4 * hidden)
    throw std::invalid_argument("w_mu must be [in + hidden, 4 hidden] and b_mu [4 hidden]");
  if (h0.ndim() != 2 || h0.shape(0) != x.shape(0) || h0.shape(1) != hidden)
    throw std::invalid_argument("h0 and c0 must be [batch, hidden]");
  return LstmParams{x.data(),       x.shape(0),  x.shape(1),   x.shape(2),     hidden,    w_mu.data(), w_rho.data(),
                    stream(w_seed), b_mu.data(), b_rho.data(), stream(b_seed), h0.data(), c0.data()};
}

// The forward pass and what it saves: (h_seq, h_last, c_last, w, gates, cells).
py::tuple forward(const LstmParams& p) {
  const int64_t B = p.batch, T = p.steps, H = p.hidden;
  Array h_seq({B, T, H}), h_last({B, H}), c_last({B, H}), w({p.in + H, 4 * H}), gates({B, T, 4 * H}), cells({B, T, H}),
      b(4 * H), packed_w_h(lstm_packed_w_h_floats(H));
  lstm_forward(serial_for(), p, LstmSaved{w.mutable_data(), gates.mutable_data(), cells.mutable_data()},
               LstmForwardScratch{b.mutable_data(), packed_w_h.mutable_data()}, h_seq.mutable_data(),
               h_last.mutable_data(), c_last.mutable_data());
  return py::make_tuple(h_seq, h_last, c_last, w, gates, cells);
}

// (h_seq, h_last, c_last)
py::tuple lstm(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed, const Array& b_mu,
               const Array& b_rho, const Seed& b_seed, const Array& h0, const Array& c0) {
  const py::tuple out = forward(lstm_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0));
  return py::make_tuple(out[0], out[1], out[2]);
}

// (dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0), running the forward pass first for what it saves.
py::tuple lstm_grad(const Array& dh_seq, const Array& dh_last, const Array& dc_last, const Array& x, const Array& w_mu,
                    const Array& w_rho, const Seed& w_seed, const Array& b_mu, const Array& b_rho, const Seed& b_seed,
                    const Array& h0, const Array& c0) {
  const LstmParams p = lstm_params(x, w_mu, w_rho, w_seed, b_mu, b_rho, b_seed, h0, c0);
  const int64_t B = p.batch, T = p.steps, H = p.hidden;
  if (dh_seq.ndim() != 3 || dh_seq.shape(0) != B || dh_seq.shape(1) != T || dh_seq.shape(2) != H)
    throw std::invalid_argument("dh_seq must be [batch, steps, hidden]");
  require_same_shape(h0, dh_last, "h0 and dh_last");
  require_same_shape(h0, dc_last, "h0 and dc_last");
  const py::tuple saved = forward(p);
  Array dx({B, T, p.in}), dw_mu({p.in + H, 4 * H}), dw_rho({p.in + H, 4 * H}), db_mu(4 * H), db_rho(4 * H), dh0({B, H}),
      dc0({B, H}), h_prev({B, T, H}), dh({B, H}), dc({B, H}), packed_w_h(lstm_packed_w_h_floats(H));
  // dz overwrites the saved gates in place, as the TF op does when it can.
  Array gates = saved[4].cast<Array>();
  const LstmForwardResult fwd{saved[3].cast<Array>().data(), gates.data(), saved[5].cast<Array>().data(),
                              saved[0].cast<Array>().data()};
  const LstmGradParams grad{p,
                            fwd,
                            dh_seq.data(),
                            dh_last.data(),
                            dc_last.data(),
                            dx.mutable_data(),
                            dh0.mutable_data(),
                            dc0.mutable_data(),
                            dw_mu.mutable_data(),
                            dw_rho.mutable_data(),
                            db_mu.mutable_data(),
                            db_rho.mutable_data()};
  lstm_backward(serial_for(), grad,
                LstmBackwardScratch{gates.mutable_data(), h_prev.mutable_data(), dh.mutable_data(), dc.mutable_data(),
                                    packed_w_h.mutable_data()});
  return py::make_tuple(dx, dw_mu, dw_rho, db_mu, db_rho, dh0, dc0);
}

}  // namespace

void register_lstm(py::module_& m) {
  m.def("lstm", &lstm, py::arg("x"), py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"),
        py::arg("b_rho"), py::arg("b_seed"), py::arg("h0"), py::arg("c0"));
  m.def("lstm_grad", &lstm_grad, py::arg("dh_seq"), py::arg("dh_last"), py::arg("dc_last"), py::arg("x"),
        py::arg("w_mu"), py::arg("w_rho"), py::arg("w_seed"), py::arg("b_mu"), py::arg("b_rho"), py::arg("b_seed"),
        py::arg("h0"), py::arg("c0"));
  m.def(
      "activations",
      [](const Array& x) {
        Array sig = empty_like(x), tanh = empty_like(x);
        best_lstm_kernels().sigmoid(x.data(), sig.mutable_data(), x.size());
        best_lstm_kernels().tanh(x.data(), tanh.mutable_data(), x.size());
        return py::make_tuple(sig, tanh);
      },
      py::arg("x"), "(sigmoid(x), tanh(x)) with the LSTM's vectorised activations.");
}

}  // namespace pyb
}  // namespace fusedbnn
