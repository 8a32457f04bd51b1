// FusedBnn>Linear and FusedBnn>LinearGrad: sampling fused with the contraction.
#include "core/linear.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/linear_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

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
