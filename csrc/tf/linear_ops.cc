// FusedBnn>Linear and FusedBnn>LinearGrad: sampling fused with the contraction.
#include "core/linear.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// Inputs shared by both ops, at these positions after LinearGrad's leading dy.
enum LinearInput { kX, kWMu, kWRho, kWSeed, kBMu, kBRho, kBSeed };

tfl::Status linear_shapes(InferenceContext* c, int first, ShapeHandle* y) {
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(first + kX), 1, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kWMu), 2, &w));
  TF_RETURN_IF_ERROR(merge_named(c, first + kWMu, first + kWRho, "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + kWSeed, "w_seed"));
  DimensionHandle in;
  const tfl::Status s = c->Merge(c->Dim(x, -1), c->Dim(w, 1), &in);
  if (!s.ok()) return tfl::errors::InvalidArgument("x's last dimension must equal w_mu's in-features: ", s.message());
  bool use_bias;
  TF_RETURN_IF_ERROR(c->GetAttr("use_bias", &use_bias));
  if (use_bias) {
    ShapeHandle b;
    DimensionHandle out;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kBMu), 1, &b));
    TF_RETURN_IF_ERROR(merge_named(c, first + kBMu, first + kBRho, "b_rho must have the shape of b_mu"));
    TF_RETURN_IF_ERROR(seed_shape(c, first + kBSeed, "b_seed"));
    const tfl::Status sb = c->Merge(c->Dim(b, 0), c->Dim(w, 0), &out);
    if (!sb.ok()) return tfl::errors::InvalidArgument("b_mu must have w_mu's out-features: ", sb.message());
  }
  ShapeHandle batch;
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &batch));
  return c->Concatenate(batch, c->Vector(c->Dim(w, 0)), y);
}

// Validates the inputs in eager mode too (shape functions only run when graphs are built).
class LinearBase : public tfl::OpKernel {
 public:
  explicit LinearBase(tfl::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
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
      const tfl::Tensor *b_mu, *b_rho;
      TF_RETURN_IF_ERROR(ctx->input("b_mu", &b_mu));
      TF_RETURN_IF_ERROR(ctx->input("b_rho", &b_rho));
      TF_RETURN_IF_ERROR(require_rank(*b_mu, "b_mu", 1));
      TF_RETURN_IF_ERROR(require_same_shape(*b_mu, "b_mu", *b_rho, "b_rho"));
      if (b_mu->dim_size(0) != p->out) {
        return tfl::errors::InvalidArgument("b_mu must have w_mu's out-features (", p->out, "), got shape ",
                                            b_mu->shape().DebugString());
      }
      p->b_mu = b_mu->flat<float>().data();
      p->b_rho = b_rho->flat<float>().data();
      TF_RETURN_IF_ERROR(read_seed(ctx, "b_seed", &p->b_stream));
    }
    return tfl::OkStatus();
  }

  bool use_bias_ = true;
};

class LinearOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    tfl::TensorShape y_shape = ctx->input(kX).shape();
    y_shape.set_dim(y_shape.dims() - 1, p.out);
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, y_shape, &y));
    linear_forward(parallel_for(ctx), p, y->flat<float>().data());
  }
};

class LinearGradOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    const tfl::Tensor& dy = ctx->input(0);
    tfl::TensorShape y_shape = ctx->input(1 + kX).shape();
    y_shape.set_dim(y_shape.dims() - 1, p.out);
    OP_REQUIRES(ctx, dy.shape() == y_shape,
                tfl::errors::InvalidArgument("dy must have shape ", y_shape.DebugString(), ", got ",
                                             dy.shape().DebugString()));
    tfl::Tensor *dx, *dw_mu, *dw_rho, *db_mu, *db_rho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1 + kX).shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1 + kWMu).shape(), &dw_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(1 + kWMu).shape(), &dw_rho));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(1 + kBMu).shape(), &db_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, ctx->input(1 + kBMu).shape(), &db_rho));
    linear_backward(parallel_for(ctx), p, dy.flat<float>().data(), dx->flat<float>().data(), dw_mu->flat<float>().data(), dw_rho->flat<float>().data(),
                    db_mu->flat<float>().data(), db_rho->flat<float>().data());
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
      c->set_output(0, c->input(1 + kX));
      c->set_output(1, c->input(1 + kWMu));
      c->set_output(2, c->input(1 + kWMu));
      c->set_output(3, c->input(1 + kBMu));
      c->set_output(4, c->input(1 + kBMu));
      return tfl::OkStatus();
    })
    .Doc("Gradients of FusedBnn>Linear for x, w_mu, w_rho, b_mu, b_rho, regenerating the noise.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Linear", LinearOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>LinearGrad", LinearGradOp);

}  // namespace tf
}  // namespace fusedbnn
