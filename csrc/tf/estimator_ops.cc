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

// The CPU pass of either estimator (core/estimators.h).
struct CpuEstimators {
  static tfl::Status forward(tfl::OpKernelContext* ctx, LinearEstimator estimator, const LinearParams& p,
                             const NoiseStream& x_stream, int64_t rows_per_example, float* y, float* y_std) {
    if (estimator == LinearEstimator::kFlipout) {
      flipout_linear_forward(parallel_for(ctx), p, x_stream, rows_per_example, y);
    } else {
      local_reparam_linear_forward(parallel_for(ctx), p, x_stream, y, y_std);
    }
    return tfl::OkStatus();
  }
  static tfl::Status backward(tfl::OpKernelContext* ctx, LinearEstimator estimator, const LinearGradParams& g,
                              const NoiseStream& x_stream, int64_t rows_per_example, const float* y_std) {
    if (estimator == LinearEstimator::kFlipout) {
      flipout_linear_backward(parallel_for(ctx), g, x_stream, rows_per_example);
    } else {
      local_reparam_linear_backward(parallel_for(ctx), g, x_stream, y_std);
    }
    return tfl::OkStatus();
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

FUSEDBNN_REGISTER_ESTIMATORS(FUSEDBNN_REGISTER_CPU, CpuEstimators);

}  // namespace tf
}  // namespace fusedbnn
