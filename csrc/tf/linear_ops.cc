// FusedBnn>Linear and FusedBnn>LinearGrad: sampling fused with the contraction.
#include "core/linear.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/linear_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

tfl::Status linear_shapes(InferenceContext* c, int first, ShapeHandle* y) {
  ShapeHandle x, w, w_rho;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(first + linear_input::kX), 1, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + linear_input::kWMu), 2, &w));
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->input(first + linear_input::kWMu), c->input(first + linear_input::kWRho), &w_rho),
            "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + linear_input::kWSeed, "w_seed"));
  DimensionHandle in;
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->Dim(x, -1), c->Dim(w, 1), &in), "x's last dimension must equal w_mu's in-features"));
  bool use_bias;
  TF_RETURN_IF_ERROR(c->GetAttr("use_bias", &use_bias));
  if (use_bias) {
    ShapeHandle b, b_rho;
    DimensionHandle out;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + linear_input::kBMu), 1, &b));
    TF_RETURN_IF_ERROR(
        named(c->Merge(c->input(first + linear_input::kBMu), c->input(first + linear_input::kBRho), &b_rho),
              "b_rho must have the shape of b_mu"));
    TF_RETURN_IF_ERROR(seed_shape(c, first + linear_input::kBSeed, "b_seed"));
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(b, 0), c->Dim(w, 0), &out), "b_mu must have w_mu's out-features"));
  }
  ShapeHandle batch;
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &batch));
  return c->Concatenate(batch, c->Vector(c->Dim(w, 0)), y);
}

class LinearOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    linear_forward(parallel_for(ctx), p, y->flat<float>().data());
  }
};

class LinearGradOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    OP_REQUIRES_OK(ctx, read_params(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    linear_backward(parallel_for(ctx), g);
  }
};

}  // namespace

REGISTER_OP("FusedBnn>Linear")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Output("y: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("use_bias: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(linear_shapes(c, 0, &y));
      c->set_output(0, y);
      return tfl::OkStatus();
    })
    .Doc("y = x W^T + b, W and b sampled inside the op; b inputs are ignored unless use_bias.");

REGISTER_OP("FusedBnn>LinearGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Output("dx: float")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .Output("db_mu: float")
    .Output("db_rho: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("use_bias: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(linear_shapes(c, 1, &y));
      set_layer_grad_shapes(c, linear_input::kX, linear_input::kWMu, linear_input::kBMu);
      return tfl::OkStatus();
    })
    .Doc("Gradients of FusedBnn>Linear for x, w_mu, w_rho, b_mu, b_rho, regenerating the noise.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Linear", LinearOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LinearGrad", LinearGradOp);

}  // namespace tf
}  // namespace fusedbnn
