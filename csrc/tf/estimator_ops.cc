// FusedBnn>FlipoutLinear, FusedBnn>LocalReparamLinear and their gradients: the per-example
// estimators of the linear layer (core/estimators.h).
#include "core/estimators.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/estimator_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

class FlipoutLinearOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    NoiseStream x_stream;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &p, &x_stream));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    flipout_linear_forward(parallel_for(ctx), p, x_stream, y->flat<float>().data());
  }
};

class FlipoutLinearGradOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    NoiseStream x_stream;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &g, &x_stream));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    flipout_linear_backward(parallel_for(ctx), g, x_stream);
  }
};

class LocalReparamLinearOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    NoiseStream x_stream;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &p, &x_stream));
    tfl::Tensor *y, *y_std;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, y->shape(), &y_std));
    local_reparam_linear_forward(parallel_for(ctx), p, x_stream, y->flat<float>().data(), y_std->flat<float>().data());
  }
};

class LocalReparamLinearGradOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    NoiseStream x_stream;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &g, &x_stream));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    const tfl::Tensor& y_std = ctx->input(1 + estimator_input::kYStd);
    OP_REQUIRES_OK(ctx, require_same_shape(ctx->input(0), "dy", y_std, "y_std"));
    local_reparam_linear_backward(parallel_for(ctx), g, x_stream, y_std.flat<float>().data());
  }
};

tfl::Status forward_shapes(InferenceContext* c) {
  ShapeHandle y;
  TF_RETURN_IF_ERROR(estimator_shapes(c, 0, &y));
  for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, y);  // y, and y_std alike
  return tfl::OkStatus();
}

tfl::Status grad_shapes(InferenceContext* c) {
  ShapeHandle y;
  TF_RETURN_IF_ERROR(estimator_shapes(c, 1, &y));
  set_layer_grad_shapes(c, linear_input::kX, linear_input::kWMu, linear_input::kBMu);
  return tfl::OkStatus();
}

}  // namespace

// The inputs and attributes every estimator op shares (the gradient ops put dy first).
#define FUSEDBNN_ESTIMATOR_INPUTS               \
  Input("x: float")                             \
      .Input("w_mu: float")                     \
      .Input("w_rho: float")                    \
      .Input("w_seed: Tseed")                   \
      .Input("b_mu: float")                     \
      .Input("b_rho: float")                    \
      .Input("b_seed: Tseed")                   \
      .Input("x_seed: Tseed")                   \
      .Attr("Tseed: {int32, int64} = DT_INT64") \
      .Attr("use_bias: bool = true")

#define FUSEDBNN_ESTIMATOR_GRAD_OUTPUTS \
  Output("dx: float").Output("dw_mu: float").Output("dw_rho: float").Output("db_mu: float").Output("db_rho: float")

REGISTER_OP("FusedBnn>FlipoutLinear")
    .FUSEDBNN_ESTIMATOR_INPUTS.Output("y: float")
    .SetShapeFn(forward_shapes)
    .Doc("Flipout: y = x mu^T + ((x * s_in) (sigma * eps)^T) * s_out + b, signs from x_seed.");

REGISTER_OP("FusedBnn>FlipoutLinearGrad")
    .Input("dy: float")
    .FUSEDBNN_ESTIMATOR_INPUTS.FUSEDBNN_ESTIMATOR_GRAD_OUTPUTS.SetShapeFn(grad_shapes)
    .Doc("Gradients of FusedBnn>FlipoutLinear, regenerating eps and the signs.");

REGISTER_OP("FusedBnn>LocalReparamLinear")
    .FUSEDBNN_ESTIMATOR_INPUTS.Output("y: float")
    .Output("y_std: float")
    .SetShapeFn(forward_shapes)
    .Doc("Local reparameterization: y = x mu^T + y_std * eps_out + b, y_std = sqrt(x^2 (sigma^2)^T).");

REGISTER_OP("FusedBnn>LocalReparamLinearGrad")
    .Input("dy: float")
    .FUSEDBNN_ESTIMATOR_INPUTS.Input("y_std: float")
    .FUSEDBNN_ESTIMATOR_GRAD_OUTPUTS.SetShapeFn(grad_shapes)
    .Doc("Gradients of FusedBnn>LocalReparamLinear from its y_std, regenerating eps_out.");

FUSEDBNN_REGISTER_CPU("FusedBnn>FlipoutLinear", FlipoutLinearOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>FlipoutLinearGrad", FlipoutLinearGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LocalReparamLinear", LocalReparamLinearOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LocalReparamLinearGrad", LocalReparamLinearGradOp);

}  // namespace tf
}  // namespace fusedbnn
