// FusedBnn>Linear and FusedBnn>LinearGrad: sampling fused with the contraction.
#include "core/linear.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/gaussian_kernel.h"
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
    OP_REQUIRES_OK(ctx, read_params_and_priors(ctx, &p));
    p.with_kl = p.with_kl && kl_required(ctx);
    tfl::Tensor *y, *kl;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tfl::TensorShape({}), &kl));
    kl->scalar<float>()() = 0.0f;
    linear_forward(parallel_for(ctx), p, y->flat<float>().data(), kl->flat<float>().data());
  }
};

class LinearGradOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    OP_REQUIRES_OK(ctx, read_params_and_priors(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    const tfl::Tensor* dkl;
    OP_REQUIRES_OK(ctx, ctx->input("dkl", &dkl));
    OP_REQUIRES_OK(ctx, require_scalar_dkl(*dkl));
    // A zero dkl (the KL output unused) costs nothing: the plain backward pass.
    if (g.with_kl && dkl->scalar<float>()() != 0.0f) g.dkl = dkl->flat<float>().data();
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
    .Input("w_mu_prior: float")
    .Input("w_std_prior: float")
    .Input("b_mu_prior: float")
    .Input("b_std_prior: float")
    .Output("y: float")
    .Output("kl: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("use_bias: bool = true")
    .Attr("with_kl: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(linear_shapes(c, 0, &y));
      c->set_output(0, y);
      c->set_output(1, c->Scalar());
      return tfl::OkStatus();
    })
    .Doc(
        "y = x W^T + b, W and b sampled inside the op; b inputs are ignored unless use_bias. With with_kl, kl is "
        "the one-sample KL sum(log N(w; mu, sigma) - log N(w; mu_prior, std_prior)) over W and b at that sample "
        "(the priors are read only then), else 0.");

REGISTER_OP("FusedBnn>LinearGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Input("w_mu_prior: float")
    .Input("w_std_prior: float")
    .Input("b_mu_prior: float")
    .Input("b_std_prior: float")
    .Input("dkl: float")
    .Output("dx: float")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .Output("db_mu: float")
    .Output("db_rho: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("use_bias: bool = true")
    .Attr("with_kl: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(linear_shapes(c, 1, &y));
      set_layer_grad_shapes(c, linear_input::kX, linear_input::kWMu, linear_input::kBMu);
      return tfl::OkStatus();
    })
    .Doc(
        "Gradients of FusedBnn>Linear for x, w_mu, w_rho, b_mu, b_rho, regenerating the noise; with with_kl, dkl "
        "times the KL's gradient is added in the same pass.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Linear", LinearOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LinearGrad", LinearGradOp);

}  // namespace tf
}  // namespace fusedbnn
