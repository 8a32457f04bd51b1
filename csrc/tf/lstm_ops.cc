// FusedBnn>Lstm and FusedBnn>LstmGrad: the whole recurrence in one op, weights sampled once per call.
#include "tensorflow/core/framework/op.h"
#include "tf/lstm_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// Checks the shared inputs; batch, steps and hidden come back as dimensions.
tfl::Status lstm_shapes(InferenceContext* c, int first, DimensionHandle* batch, DimensionHandle* steps,
                        DimensionHandle* hidden) {
  ShapeHandle x, w, w_rho, b, b_rho, state;
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + lstm_input::kX), 3, &x), "x must be [batch, steps, in]"));
  TF_RETURN_IF_ERROR(
      named(c->WithRank(c->input(first + lstm_input::kWMu), 2, &w), "w_mu must be [in + hidden, 4 hidden]"));
  TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + lstm_input::kWMu), c->input(first + lstm_input::kWRho), &w_rho),
                           "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + lstm_input::kWSeed, "w_seed"));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + lstm_input::kBMu), 1, &b), "b_mu must be [4 hidden]"));
  TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + lstm_input::kBMu), c->input(first + lstm_input::kBRho), &b_rho),
                           "b_rho must have the shape of b_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + lstm_input::kBSeed, "b_seed"));
  DimensionHandle gates, rows;
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(w, 1), c->Dim(b, 0), &gates), "b_mu must have w_mu's 4 hidden columns"));
  TF_RETURN_IF_ERROR(named(c->Divide(gates, 4, true, hidden), "w_mu's columns must be 4 hidden"));
  TF_RETURN_IF_ERROR(c->Add(c->Dim(x, 2), *hidden, &rows));
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(w, 0), rows, &rows), "w_mu must have in + hidden rows"));
  *batch = c->Dim(x, 0);
  *steps = c->Dim(x, 1);
  const ShapeHandle expected_state = c->Matrix(*batch, *hidden);
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->input(first + lstm_input::kH0), expected_state, &state), "h0 must be [batch, hidden]"));
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->input(first + lstm_input::kC0), expected_state, &state), "c0 must be [batch, hidden]"));
  return tfl::OkStatus();
}

class LstmOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmParams p;
    OP_REQUIRES_OK(ctx, read_lstm_params(ctx, 0, &p));
    LstmOutputs out;
    OP_REQUIRES_OK(ctx, allocate_lstm_outputs(ctx, &p, &out));
    *out.kl = 0.0f;
    tfl::Tensor b, packed_w_h;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({4 * p.hidden}), &b));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({lstm_packed_w_h_floats(p.hidden)}), &packed_w_h));
    lstm_forward(parallel_for(ctx), p, out.saved, LstmForwardScratch{data(&b), data(&packed_w_h)}, out.h_seq,
                 out.h_last, out.c_last, out.kl);
  }
};

class LstmGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmGradParams p;
    OP_REQUIRES_OK(ctx, read_lstm_params(ctx, lstm_input::kGradPrefix, &p));
    tfl::Tensor dz_holder;
    float* dz;
    OP_REQUIRES_OK(ctx, prepare_lstm_grad(ctx, &p, &dz_holder, &dz));
    // A zero dkl (the KL output unused) costs nothing: the plain backward pass.
    const tfl::Tensor& dkl = ctx->input(lstm_input::kDkl);
    if (p.with_kl && dkl.scalar<float>()() != 0.0f) p.dkl = data(dkl);
    const tfl::TensorShape seq({p.batch, p.steps, p.hidden}), state({p.batch, p.hidden});
    tfl::Tensor h_prev, dh, dc, packed_w_h;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, seq, &h_prev));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, state, &dh));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, state, &dc));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({lstm_packed_w_h_floats(p.hidden)}), &packed_w_h));
    lstm_backward(parallel_for(ctx), p,
                  LstmBackwardScratch{dz, data(&h_prev), data(&dh), data(&dc), data(&packed_w_h)});
  }
};

}  // namespace

REGISTER_OP("FusedBnn>Lstm")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Input("h0: float")
    .Input("c0: float")
    .Input("w_mu_prior: float")
    .Input("w_std_prior: float")
    .Input("b_mu_prior: float")
    .Input("b_std_prior: float")
    .Output("h_seq: float")
    .Output("h_last: float")
    .Output("c_last: float")
    .Output("w: float")
    .Output("gates: float")
    .Output("cells: float")
    .Output("kl: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("with_kl: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch, steps, hidden, gates;
      TF_RETURN_IF_ERROR(lstm_shapes(c, 0, &batch, &steps, &hidden));
      TF_RETURN_IF_ERROR(c->Multiply(hidden, 4, &gates));
      c->set_output(0, c->MakeShape({batch, steps, hidden}));
      c->set_output(1, c->Matrix(batch, hidden));
      c->set_output(2, c->Matrix(batch, hidden));
      c->set_output(3, c->input(lstm_input::kWMu));
      c->set_output(4, c->MakeShape({batch, steps, gates}));
      c->set_output(5, c->MakeShape({batch, steps, hidden}));
      c->set_output(kLstmKlOutput, c->Scalar());
      return tfl::OkStatus();
    })
    .Doc(
        "LSTM over x [batch, steps, in] from state (h0, c0), W [in + hidden, 4 hidden] and b sampled once; "
        "gate order f, i, c, o. Returns h_seq, h_last, c_last, and for the gradient the sampled W, the "
        "activated gates and the cell states of every step. With with_kl, kl is the one-sample KL "
        "sum(log N(w; mu, sigma) - log N(w; mu_prior, std_prior)) over W and b at that sample (the priors are read "
        "only then), else 0.");

REGISTER_OP("FusedBnn>LstmGrad")
    .Input("dh_seq: float")
    .Input("dh_last: float")
    .Input("dc_last: float")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Input("h0: float")
    .Input("c0: float")
    .Input("w_mu_prior: float")
    .Input("w_std_prior: float")
    .Input("b_mu_prior: float")
    .Input("b_std_prior: float")
    .Input("h_seq: float")
    .Input("w: float")
    .Input("gates: float")
    .Input("cells: float")
    .Input("dkl: float")
    .Output("dx: float")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .Output("db_mu: float")
    .Output("db_rho: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("with_kl: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch, steps, hidden;
      TF_RETURN_IF_ERROR(lstm_shapes(c, lstm_input::kGradPrefix, &batch, &steps, &hidden));
      c->set_output(0, c->input(lstm_input::kGradPrefix + lstm_input::kX));
      c->set_output(1, c->input(lstm_input::kGradPrefix + lstm_input::kWMu));
      c->set_output(2, c->input(lstm_input::kGradPrefix + lstm_input::kWMu));
      c->set_output(3, c->input(lstm_input::kGradPrefix + lstm_input::kBMu));
      c->set_output(4, c->input(lstm_input::kGradPrefix + lstm_input::kBMu));
      c->set_output(5, c->Matrix(batch, hidden));
      c->set_output(6, c->Matrix(batch, hidden));
      ShapeHandle dkl;
      TF_RETURN_IF_ERROR(named(c->WithRank(c->input(lstm_input::kDkl), 0, &dkl), "dkl must be a scalar"));
      return tfl::OkStatus();
    })
    .Doc(
        "Backpropagation through time for FusedBnn>Lstm from its saved outputs, regenerating the noise for "
        "drho; with with_kl, dkl times the KL's gradient is added in the same pass.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Lstm", LstmOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LstmGrad", LstmGradOp);

}  // namespace tf
}  // namespace fusedbnn
