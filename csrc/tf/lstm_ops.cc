// FusedBnn>Lstm and FusedBnn>LstmGrad: the whole recurrence in one op, weights sampled once per call.
#include "core/lstm.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// Inputs shared by both ops, at these positions after LstmGrad's leading dh_seq, dh_last, dc_last.
enum LstmInput { kX, kWMu, kWRho, kWSeed, kBMu, kBRho, kBSeed, kH0, kC0 };
constexpr int kGradPrefix = 3;

tfl::Status named(const tfl::Status& s, const char* what) {
  if (s.ok()) return s;
  return tfl::errors::InvalidArgument(what, ": ", s.message());
}

// Checks the shared inputs; batch, steps and hidden come back as dimensions.
tfl::Status lstm_shapes(InferenceContext* c, int first, DimensionHandle* batch, DimensionHandle* steps,
                        DimensionHandle* hidden) {
  ShapeHandle x, w, b, state;
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + kX), 3, &x), "x must be [batch, steps, in]"));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + kWMu), 2, &w), "w_mu must be [in + hidden, 4 hidden]"));
  TF_RETURN_IF_ERROR(merge_named(c, first + kWMu, first + kWRho, "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + kWSeed, "w_seed"));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + kBMu), 1, &b), "b_mu must be [4 hidden]"));
  TF_RETURN_IF_ERROR(merge_named(c, first + kBMu, first + kBRho, "b_rho must have the shape of b_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + kBSeed, "b_seed"));
  DimensionHandle gates, rows;
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(w, 1), c->Dim(b, 0), &gates), "b_mu must have w_mu's 4 hidden columns"));
  TF_RETURN_IF_ERROR(named(c->Divide(gates, 4, true, hidden), "w_mu's columns must be 4 hidden"));
  TF_RETURN_IF_ERROR(c->Add(c->Dim(x, 2), *hidden, &rows));
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(w, 0), rows, &rows), "w_mu must have in + hidden rows"));
  *batch = c->Dim(x, 0);
  *steps = c->Dim(x, 1);
  const ShapeHandle expected_state = c->Matrix(*batch, *hidden);
  TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + kH0), expected_state, &state), "h0 must be [batch, hidden]"));
  TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + kC0), expected_state, &state), "c0 must be [batch, hidden]"));
  return tfl::OkStatus();
}

tfl::Status require_shape(const tfl::Tensor& t, const char* name, const tfl::TensorShape& shape) {
  if (t.shape() != shape) {
    return tfl::errors::InvalidArgument(name, " must have shape ", shape.DebugString(), ", got ",
                                        t.shape().DebugString());
  }
  return tfl::OkStatus();
}

// Reads and validates the shared inputs (shape functions only run when graphs are built).
tfl::Status read_params(tfl::OpKernelContext* ctx, int first, LstmParams* p) {
  const tfl::Tensor& x = ctx->input(first + kX);
  const tfl::Tensor& w_mu = ctx->input(first + kWMu);
  if (x.dims() != 3) return tfl::errors::InvalidArgument("x must be [batch, steps, in], got shape ", x.shape().DebugString());
  TF_RETURN_IF_ERROR(require_rank(w_mu, "w_mu", 2));
  TF_RETURN_IF_ERROR(require_same_shape(w_mu, "w_mu", ctx->input(first + kWRho), "w_rho"));
  p->batch = x.dim_size(0);
  p->steps = x.dim_size(1);
  p->in = x.dim_size(2);
  const int64_t gates = w_mu.dim_size(1);
  if (gates == 0 || gates % 4 != 0) {
    return tfl::errors::InvalidArgument("w_mu must be [in + hidden, 4 hidden] with hidden > 0, got shape ",
                                        w_mu.shape().DebugString());
  }
  p->hidden = gates / 4;
  TF_RETURN_IF_ERROR(require_shape(w_mu, "w_mu", tfl::TensorShape({p->in + p->hidden, gates})));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + kBMu), "b_mu", tfl::TensorShape({gates})));
  TF_RETURN_IF_ERROR(require_same_shape(ctx->input(first + kBMu), "b_mu", ctx->input(first + kBRho), "b_rho"));
  const tfl::TensorShape state({p->batch, p->hidden});
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + kH0), "h0", state));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + kC0), "c0", state));
  p->x = x.flat<float>().data();
  p->w_mu = w_mu.flat<float>().data();
  p->w_rho = ctx->input(first + kWRho).flat<float>().data();
  p->b_mu = ctx->input(first + kBMu).flat<float>().data();
  p->b_rho = ctx->input(first + kBRho).flat<float>().data();
  p->h0 = ctx->input(first + kH0).flat<float>().data();
  p->c0 = ctx->input(first + kC0).flat<float>().data();
  TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->w_stream));
  return read_seed(ctx, "b_seed", &p->b_stream);
}

float* data(tfl::Tensor* t) { return t->flat<float>().data(); }
const float* data(const tfl::Tensor& t) { return t.flat<float>().data(); }

class LstmOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, 0, &p));
    const int64_t B = p.batch, T = p.steps, H = p.hidden;
    tfl::Tensor *h_seq, *h_last, *c_last, *w, *gates, *cells;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({B, T, H}), &h_seq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tfl::TensorShape({B, H}), &h_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, tfl::TensorShape({B, H}), &c_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(kWMu).shape(), &w));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, tfl::TensorShape({B, T, 4 * H}), &gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, tfl::TensorShape({B, T, H}), &cells));
    tfl::Tensor z, b, row;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({B, 4 * H}), &z));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({4 * H}), &b));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({B, H}), &row));
    lstm_forward(parallel_for(ctx), p, LstmSaved{data(w), data(gates), data(cells)},
                 LstmForwardScratch{data(&z), data(&b), data(&row)}, data(h_seq), data(h_last), data(c_last));
  }
};

// Inputs after the shared ones: the forward outputs the backward pass reads.
enum LstmSavedInput { kHSeq = kGradPrefix + kC0 + 1, kW, kGates, kCells };

class LstmGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, kGradPrefix, &p));
    const int64_t B = p.batch, T = p.steps, H = p.hidden;
    const tfl::TensorShape seq({B, T, H}), state({B, H});
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(0), "dh_seq", seq));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(1), "dh_last", state));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(2), "dc_last", state));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(kHSeq), "h_seq", seq));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(kW), "w", ctx->input(kGradPrefix + kWMu).shape()));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(kGates), "gates", tfl::TensorShape({B, T, 4 * H})));
    OP_REQUIRES_OK(ctx, require_shape(ctx->input(kCells), "cells", seq));
    tfl::Tensor *dx, *dw_mu, *dw_rho, *db_mu, *db_rho, *dh0, *dc0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(kGradPrefix + kX).shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(kGradPrefix + kWMu).shape(), &dw_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(kGradPrefix + kWMu).shape(), &dw_rho));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(kGradPrefix + kBMu).shape(), &db_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, ctx->input(kGradPrefix + kBMu).shape(), &db_rho));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, state, &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, state, &dc0));
    tfl::Tensor dz, h_prev, dh, dc, row;
    // dz takes over the saved gates' buffer when nothing else holds it (as in a traced training step).
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_temp({kGates}, tfl::DT_FLOAT, tfl::TensorShape({B, T, 4 * H}),
                                                            &dz));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, seq, &h_prev));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, state, &dh));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, state, &dc));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, state, &row));
    const LstmForwardResult fwd{data(ctx->input(kW)), data(ctx->input(kGates)), data(ctx->input(kCells)),
                                data(ctx->input(kHSeq))};
    lstm_backward(parallel_for(ctx), p, fwd, data(ctx->input(0)), data(ctx->input(1)), data(ctx->input(2)), LstmBackwardScratch{data(&dz), data(&h_prev), data(&dh), data(&dc), data(&row)},
                  LstmGrads{data(dx), data(dh0), data(dc0), data(dw_mu), data(dw_rho), data(db_mu), data(db_rho)});
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
    .Output("h_seq: float")
    .Output("h_last: float")
    .Output("c_last: float")
    .Output("w: float")
    .Output("gates: float")
    .Output("cells: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch, steps, hidden, gates;
      TF_RETURN_IF_ERROR(lstm_shapes(c, 0, &batch, &steps, &hidden));
      TF_RETURN_IF_ERROR(c->Multiply(hidden, 4, &gates));
      c->set_output(0, c->MakeShape({batch, steps, hidden}));
      c->set_output(1, c->Matrix(batch, hidden));
      c->set_output(2, c->Matrix(batch, hidden));
      c->set_output(3, c->input(kWMu));
      c->set_output(4, c->MakeShape({batch, steps, gates}));
      c->set_output(5, c->MakeShape({batch, steps, hidden}));
      return tfl::OkStatus();
    })
    .Doc("LSTM over x [batch, steps, in] from state (h0, c0), W [in + hidden, 4 hidden] and b sampled once; "
         "gate order f, i, c, o. Returns h_seq, h_last, c_last, and for the gradient the sampled W, the "
         "activated gates and the cell states of every step.");

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
    .Input("h_seq: float")
    .Input("w: float")
    .Input("gates: float")
    .Input("cells: float")
    .Output("dx: float")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .Output("db_mu: float")
    .Output("db_rho: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      DimensionHandle batch, steps, hidden;
      TF_RETURN_IF_ERROR(lstm_shapes(c, kGradPrefix, &batch, &steps, &hidden));
      c->set_output(0, c->input(kGradPrefix + kX));
      c->set_output(1, c->input(kGradPrefix + kWMu));
      c->set_output(2, c->input(kGradPrefix + kWMu));
      c->set_output(3, c->input(kGradPrefix + kBMu));
      c->set_output(4, c->input(kGradPrefix + kBMu));
      c->set_output(5, c->Matrix(batch, hidden));
      c->set_output(6, c->Matrix(batch, hidden));
      return tfl::OkStatus();
    })
    .Doc("Backpropagation through time for FusedBnn>Lstm from its saved outputs, regenerating the noise for "
         "drho.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Lstm", LstmOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LstmGrad", LstmGradOp);

}  // namespace tf
}  // namespace fusedbnn
