// The input checks of FusedBnn>Linear and FusedBnn>LinearGrad, shared by their CPU kernels
// (linear_ops.cc) and GPU kernels (gpu/linear_gpu.cc). Tensor data pointers are read, never
// dereferenced: they are device pointers on the GPU; the seeds are host tensors on both.
#pragma once

#include "core/linear.h"
#include "tf/common.h"
#include "tf/gaussian_kernel.h"

namespace fusedbnn {
namespace tf {

// Inputs shared by both ops, at these positions after LinearGrad's leading dy.
namespace linear_input {
enum Index : int { kX, kWMu, kWRho, kWSeed, kBMu, kBRho, kBSeed };
}  // namespace linear_input

// The shape function of the linear ops whose forward inputs start at `first`: y = x.shape[:-1] + [out].
inline tfl::Status linear_shapes(tfl::shape_inference::InferenceContext* c, int first,
                                 tfl::shape_inference::ShapeHandle* y) {
  tfl::shape_inference::ShapeHandle x, w, w_rho;
  TF_RETURN_IF_ERROR(named(c->WithRankAtLeast(c->input(first + linear_input::kX), 1, &x), "x must have rank >= 1"));
  TF_RETURN_IF_ERROR(named(c->WithRank(c->input(first + linear_input::kWMu), 2, &w), "w_mu must have rank 2"));
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->input(first + linear_input::kWMu), c->input(first + linear_input::kWRho), &w_rho),
            "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + linear_input::kWSeed, "w_seed"));
  tfl::shape_inference::DimensionHandle in;
  TF_RETURN_IF_ERROR(
      named(c->Merge(c->Dim(x, -1), c->Dim(w, 1), &in), "x's last dimension must equal w_mu's in-features"));
  bool use_bias;
  TF_RETURN_IF_ERROR(c->GetAttr("use_bias", &use_bias));
  if (use_bias) {
    tfl::shape_inference::ShapeHandle b, b_rho;
    tfl::shape_inference::DimensionHandle out;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + linear_input::kBMu), 1, &b));
    TF_RETURN_IF_ERROR(
        named(c->Merge(c->input(first + linear_input::kBMu), c->input(first + linear_input::kBRho), &b_rho),
              "b_rho must have the shape of b_mu"));
    TF_RETURN_IF_ERROR(seed_shape(c, first + linear_input::kBSeed, "b_seed"));
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(b, 0), c->Dim(w, 0), &out), "b_mu must have w_mu's out-features"));
  }
  tfl::shape_inference::ShapeHandle batch;
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &batch));
  return c->Concatenate(batch, c->Vector(c->Dim(w, 0)), y);
}

// Validates the inputs in eager mode too (shape functions only run when graphs are built).
class LinearBase : public tfl::OpKernel {
 public:
  explicit LinearBase(tfl::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
  }

  // Whether the forward's kl output (output 1) is read: a graph that never reads it (a predict
  // step of a layer that asks for the KL when traced) skips the KL's work. Eager ops always compute it.
  static bool kl_required(tfl::OpKernelContext* ctx) { return ctx->output_required(1); }

  // FusedBnn>Linear(Grad): the params, with the priors of the KL output when the op's with_kl is set.
  tfl::Status read_params_and_priors(tfl::OpKernelContext* ctx, LinearParams* p) {
    TF_RETURN_IF_ERROR(read_params(ctx, p));
    TF_RETURN_IF_ERROR(GetNodeAttr(def(), "with_kl", &p->with_kl));
    if (!p->with_kl) return tfl::OkStatus();
    const tfl::Tensor* mu;
    TF_RETURN_IF_ERROR(ctx->input("w_mu", &mu));
    TF_RETURN_IF_ERROR(read_prior(ctx, *mu, &p->w_prior, "w_"));
    if (!use_bias_) return tfl::OkStatus();
    TF_RETURN_IF_ERROR(ctx->input("b_mu", &mu));
    return read_prior(ctx, *mu, &p->b_prior, "b_");
  }

 protected:
  tfl::Status read_params(tfl::OpKernelContext* ctx, LinearParams* p) {
    const tfl::Tensor *x, *w_mu, *w_rho;
    TF_RETURN_IF_ERROR(ctx->input("x", &x));
    TF_RETURN_IF_ERROR(ctx->input("w_mu", &w_mu));
    TF_RETURN_IF_ERROR(ctx->input("w_rho", &w_rho));
    if (x->dims() < 1) return tfl::errors::InvalidArgument("x must have rank >= 1, got a scalar");
    TF_RETURN_IF_ERROR(require_rank(*w_mu, "w_mu", 2));
    TF_RETURN_IF_ERROR(require_same_shape(*w_mu, "w_mu", *w_rho, "w_rho"));
    if (x->dim_size(x->dims() - 1) != w_mu->dim_size(1)) {
      return tfl::errors::InvalidArgument("x's last dimension (", x->dim_size(x->dims() - 1),
                                          ") must equal w_mu's in-features (", w_mu->dim_size(1), ")");
    }
    p->x = x->flat<float>().data();
    p->in = w_mu->dim_size(1);
    p->out = w_mu->dim_size(0);
    p->rows = 1;
    for (int d = 0; d + 1 < x->dims(); ++d) p->rows *= x->dim_size(d);
    p->w_mu = w_mu->flat<float>().data();
    p->w_rho = w_rho->flat<float>().data();
    TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->w_stream));
    p->has_bias = use_bias_;
    if (use_bias_) {
      TF_RETURN_IF_ERROR(read_bias(ctx, p->out, "w_mu's out-features", &p->b_mu, &p->b_rho, &p->b_stream));
    }
    return tfl::OkStatus();
  }

  // y of shape x.shape[:-1] + [out].
  tfl::Status allocate_y(tfl::OpKernelContext* ctx, const LinearParams& p, tfl::Tensor** y) {
    tfl::TensorShape y_shape = ctx->input(linear_input::kX).shape();
    y_shape.set_dim(y_shape.dims() - 1, p.out);
    return ctx->allocate_output(0, y_shape, y);
  }

  // LinearGrad: checks dy against y's shape and allocates the gradients like their inputs.
  tfl::Status allocate_grads(tfl::OpKernelContext* ctx, LinearGradParams* g) {
    tfl::TensorShape y_shape = ctx->input(1 + linear_input::kX).shape();
    y_shape.set_dim(y_shape.dims() - 1, g->out);
    return read_dy_and_allocate_grads(ctx, y_shape, linear_input::kX, linear_input::kWMu, linear_input::kBMu, g);
  }

  bool use_bias_ = true;
};

}  // namespace tf
}  // namespace fusedbnn
