// FusedBnn>Conv2D and FusedBnn>Conv2DGrad: kernel sampling fused with an im2col + GEMM convolution.
// Conv1d is this op with a unit height (done in Python by reshaping).
#include <string>
#include <vector>

#include "core/conv.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/conv_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

tfl::Status conv_shapes(InferenceContext* c, int first, ShapeHandle* y) {
  ConvAttrs attrs;
  TF_RETURN_IF_ERROR(attrs.read(c));
  ShapeHandle x, w, w_rho;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + conv_input::kX), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + conv_input::kWMu), 4, &w));
  TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + conv_input::kWMu), c->input(first + conv_input::kWRho), &w_rho),
                           "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + conv_input::kWSeed, "w_seed"));
  DimensionHandle in_channels, out_channels = c->Dim(w, 3);
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(w, 2), attrs.groups, &in_channels));
  TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(x, attrs.channel_axis()), in_channels, &in_channels),
                           "x's channels must equal w_mu's in/groups times groups"));
  if (attrs.use_bias) {
    ShapeHandle b, b_rho;
    DimensionHandle merged;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + conv_input::kBMu), 1, &b));
    TF_RETURN_IF_ERROR(named(c->Merge(c->input(first + conv_input::kBMu), c->input(first + conv_input::kBRho), &b_rho),
                             "b_rho must have the shape of b_mu"));
    TF_RETURN_IF_ERROR(seed_shape(c, first + conv_input::kBSeed, "b_seed"));
    TF_RETURN_IF_ERROR(named(c->Merge(c->Dim(b, 0), out_channels, &merged), "b_mu must have w_mu's out channels"));
  }
  DimensionHandle spatial[2];
  for (int a = 0; a < 2; ++a) {
    const DimensionHandle in = c->Dim(x, attrs.height_axis() + a), kernel = c->Dim(w, a);
    spatial[a] = c->UnknownDim();
    if (c->ValueKnown(in) && c->ValueKnown(kernel)) {
      int64_t out, pad;
      TF_RETURN_IF_ERROR(attrs.axis(a, c->Value(in), c->Value(kernel), &out, &pad));
      spatial[a] = c->MakeDim(out);
    }
  }
  const DimensionHandle batch = c->Dim(x, 0);
  *y = attrs.channels_last ? c->MakeShape({batch, spatial[0], spatial[1], out_channels})
                           : c->MakeShape({batch, out_channels, spatial[0], spatial[1]});
  return tfl::OkStatus();
}

class Conv2DOp : public ConvBase {
 public:
  using ConvBase::ConvBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    ConvParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, output_shape(p), &y));
    tfl::Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({conv_forward_workspace(p)}), &workspace));
    conv_forward(parallel_for(ctx), p, workspace.flat<float>().data(), y->flat<float>().data());
  }
};

class Conv2DGradOp : public ConvBase {
 public:
  using ConvBase::ConvBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    ConvGradParams g;
    OP_REQUIRES_OK(ctx, read_params(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    tfl::Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({conv_backward_workspace(g)}), &workspace));
    conv_backward(parallel_for(ctx), g, workspace.flat<float>().data());
  }
};

}  // namespace

#define FUSEDBNN_CONV_ATTRS                                     \
  Attr("Tseed: {int32, int64} = DT_INT64")                      \
      .Attr("strides: list(int) = [1, 1]")                      \
      .Attr("dilations: list(int) = [1, 1]")                    \
      .Attr("padding: {'VALID', 'SAME', 'EXPLICIT'} = 'VALID'") \
      .Attr("explicit_paddings: list(int) = []")                \
      .Attr("groups: int = 1")                                  \
      .Attr("data_format: {'NHWC', 'NCHW'} = 'NHWC'")           \
      .Attr("use_bias: bool = true")

REGISTER_OP("FusedBnn>Conv2D")
    .Input("x: float")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Input("b_mu: float")
    .Input("b_rho: float")
    .Input("b_seed: Tseed")
    .Output("y: float")
    .FUSEDBNN_CONV_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(conv_shapes(c, 0, &y));
      c->set_output(0, y);
      return tfl::OkStatus();
    })
    .Doc(
        "2-D convolution of x with a kernel [kh, kw, in/groups, out] and bias sampled inside the op; "
        "b inputs are ignored unless use_bias. explicit_paddings is [top, bottom, left, right].");

REGISTER_OP("FusedBnn>Conv2DGrad")
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
    .FUSEDBNN_CONV_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(conv_shapes(c, 1, &y));
      set_layer_grad_shapes(c, conv_input::kX, conv_input::kWMu, conv_input::kBMu);
      return tfl::OkStatus();
    })
    .Doc("Gradients of FusedBnn>Conv2D for x, w_mu, w_rho, b_mu, b_rho, regenerating the noise.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Conv2D", Conv2DOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>Conv2DGrad", Conv2DGradOp);

}  // namespace tf
}  // namespace fusedbnn
