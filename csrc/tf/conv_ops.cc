// FusedBnn>Conv2D and FusedBnn>Conv2DGrad: kernel sampling fused with an im2col + GEMM convolution.
// Conv1d is this op with a unit height (done in Python by reshaping).
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "core/conv.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::DimensionHandle;
using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// Inputs shared by both ops, at these positions after Conv2DGrad's leading dy.
enum ConvInput { kX, kWMu, kWRho, kWSeed, kBMu, kBRho, kBSeed };

// The op's attributes, checked once (by the kernel's constructor and by the shape function).
struct ConvAttrs {
  std::vector<int32_t> strides, dilations, explicit_paddings;
  std::string padding_name, data_format;
  ConvPadding padding = ConvPadding::kValid;
  int64_t groups = 1;
  bool channels_last = true, use_bias = true;

  template <typename Context>
  tfl::Status read(Context* c) {
    int32_t groups_attr;
    TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
    TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dilations));
    TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding_name));
    TF_RETURN_IF_ERROR(c->GetAttr("explicit_paddings", &explicit_paddings));
    TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups_attr));
    TF_RETURN_IF_ERROR(c->GetAttr("data_format", &data_format));
    TF_RETURN_IF_ERROR(c->GetAttr("use_bias", &use_bias));
    groups = groups_attr;
    if (strides.size() != 2 || strides[0] < 1 || strides[1] < 1)
      return tfl::errors::InvalidArgument("strides must be 2 positive ints [h, w], got [", absl::StrJoin(strides, ", "), "]");
    if (dilations.size() != 2 || dilations[0] < 1 || dilations[1] < 1)
      return tfl::errors::InvalidArgument("dilations must be 2 positive ints [h, w], got [", absl::StrJoin(dilations, ", "), "]");
    if (groups < 1) return tfl::errors::InvalidArgument("groups must be positive, got ", groups);
    channels_last = data_format == "NHWC";
    if (padding_name == "VALID") {
      padding = ConvPadding::kValid;
    } else if (padding_name == "SAME") {
      padding = ConvPadding::kSame;
    } else {
      padding = ConvPadding::kExplicit;
      if (explicit_paddings.size() != 4)
        return tfl::errors::InvalidArgument("explicit_paddings must be [top, bottom, left, right], got ",
                                            explicit_paddings.size(), " values");
      for (int32_t v : explicit_paddings)
        if (v < 0) return tfl::errors::InvalidArgument("explicit_paddings must be non-negative, got ", v);
    }
    return tfl::OkStatus();
  }

  // Output size and leading padding along axis 0 (height) or 1 (width).
  tfl::Status axis(int a, int64_t in, int64_t kernel, int64_t* out, int64_t* pad_before) const {
    const int64_t before = padding == ConvPadding::kExplicit ? explicit_paddings[2 * a] : 0;
    const int64_t after = padding == ConvPadding::kExplicit ? explicit_paddings[2 * a + 1] : 0;
    const std::string error = conv_axis(in, kernel, strides[a], dilations[a], padding, before, after, out, pad_before);
    if (!error.empty()) return tfl::errors::InvalidArgument(a == 0 ? "height: " : "width: ", error);
    return tfl::OkStatus();
  }

  int height_axis() const { return channels_last ? 1 : 2; }
  int channel_axis() const { return channels_last ? 3 : 1; }
};

tfl::Status conv_shapes(InferenceContext* c, int first, ShapeHandle* y) {
  ConvAttrs attrs;
  TF_RETURN_IF_ERROR(attrs.read(c));
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kX), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kWMu), 4, &w));
  TF_RETURN_IF_ERROR(merge_named(c, first + kWMu, first + kWRho, "w_rho must have the shape of w_mu"));
  TF_RETURN_IF_ERROR(seed_shape(c, first + kWSeed, "w_seed"));
  DimensionHandle in_channels, out_channels = c->Dim(w, 3);
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(w, 2), attrs.groups, &in_channels));
  const tfl::Status s = c->Merge(c->Dim(x, attrs.channel_axis()), in_channels, &in_channels);
  if (!s.ok()) return tfl::errors::InvalidArgument("x's channels must equal w_mu's in/groups times groups: ", s.message());
  if (attrs.use_bias) {
    ShapeHandle b;
    DimensionHandle merged;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kBMu), 1, &b));
    TF_RETURN_IF_ERROR(merge_named(c, first + kBMu, first + kBRho, "b_rho must have the shape of b_mu"));
    TF_RETURN_IF_ERROR(seed_shape(c, first + kBSeed, "b_seed"));
    const tfl::Status sb = c->Merge(c->Dim(b, 0), out_channels, &merged);
    if (!sb.ok()) return tfl::errors::InvalidArgument("b_mu must have w_mu's out channels: ", sb.message());
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

// Validates the inputs in eager mode too (shape functions only run when graphs are built).
class ConvBase : public tfl::OpKernel {
 public:
  explicit ConvBase(tfl::OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, attrs_.read(ctx)); }

 protected:
  tfl::Status read_params(tfl::OpKernelContext* ctx, ConvParams* p) {
    const tfl::Tensor *x, *w_mu, *w_rho;
    TF_RETURN_IF_ERROR(ctx->input("x", &x));
    TF_RETURN_IF_ERROR(ctx->input("w_mu", &w_mu));
    TF_RETURN_IF_ERROR(ctx->input("w_rho", &w_rho));
    TF_RETURN_IF_ERROR(require_rank(*x, "x", 4));
    TF_RETURN_IF_ERROR(require_rank(*w_mu, "w_mu", 4));
    TF_RETURN_IF_ERROR(require_same_shape(*w_mu, "w_mu", *w_rho, "w_rho"));
    for (int d = 0; d < 4; ++d) {
      if (w_mu->dim_size(d) < 1)
        return tfl::errors::InvalidArgument("w_mu's sizes must be positive, got shape ", w_mu->shape().DebugString());
    }
    const int64_t groups = attrs_.groups;
    p->in_channels = x->dim_size(attrs_.channel_axis());
    p->out_channels = w_mu->dim_size(3);
    if (p->in_channels != w_mu->dim_size(2) * groups) {
      return tfl::errors::InvalidArgument("x's channels (", p->in_channels, ") must equal w_mu's in/groups (",
                                          w_mu->dim_size(2), ") times groups (", groups, ")");
    }
    if (p->out_channels % groups != 0) {
      return tfl::errors::InvalidArgument("groups (", groups, ") must divide w_mu's out channels (", p->out_channels,
                                          ")");
    }
    p->x = x->flat<float>().data();
    p->batch = x->dim_size(0);
    p->in_h = x->dim_size(attrs_.height_axis());
    p->in_w = x->dim_size(attrs_.height_axis() + 1);
    p->kernel_h = w_mu->dim_size(0);
    p->kernel_w = w_mu->dim_size(1);
    p->stride_h = attrs_.strides[0];
    p->stride_w = attrs_.strides[1];
    p->dilation_h = attrs_.dilations[0];
    p->dilation_w = attrs_.dilations[1];
    TF_RETURN_IF_ERROR(attrs_.axis(0, p->in_h, p->kernel_h, &p->out_h, &p->pad_top));
    TF_RETURN_IF_ERROR(attrs_.axis(1, p->in_w, p->kernel_w, &p->out_w, &p->pad_left));
    p->groups = groups;
    p->channels_last = attrs_.channels_last;
    p->w_mu = w_mu->flat<float>().data();
    p->w_rho = w_rho->flat<float>().data();
    TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->w_stream));
    p->has_bias = attrs_.use_bias;
    if (attrs_.use_bias) {
      const tfl::Tensor *b_mu, *b_rho;
      TF_RETURN_IF_ERROR(ctx->input("b_mu", &b_mu));
      TF_RETURN_IF_ERROR(ctx->input("b_rho", &b_rho));
      TF_RETURN_IF_ERROR(require_rank(*b_mu, "b_mu", 1));
      TF_RETURN_IF_ERROR(require_same_shape(*b_mu, "b_mu", *b_rho, "b_rho"));
      if (b_mu->dim_size(0) != p->out_channels) {
        return tfl::errors::InvalidArgument("b_mu must have w_mu's out channels (", p->out_channels, "), got shape ",
                                            b_mu->shape().DebugString());
      }
      p->b_mu = b_mu->flat<float>().data();
      p->b_rho = b_rho->flat<float>().data();
      TF_RETURN_IF_ERROR(read_seed(ctx, "b_seed", &p->b_stream));
    }
    return tfl::OkStatus();
  }

  tfl::TensorShape output_shape(const ConvParams& p) const {
    return attrs_.channels_last ? tfl::TensorShape({p.batch, p.out_h, p.out_w, p.out_channels})
                                : tfl::TensorShape({p.batch, p.out_channels, p.out_h, p.out_w});
  }

  ConvAttrs attrs_;
};

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
    ConvParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    const tfl::Tensor& dy = ctx->input(0);
    OP_REQUIRES(ctx, dy.shape() == output_shape(p),
                tfl::errors::InvalidArgument("dy must have shape ", output_shape(p).DebugString(), ", got ",
                                             dy.shape().DebugString()));
    tfl::Tensor *dx, *dw_mu, *dw_rho, *db_mu, *db_rho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(1 + kX).shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1 + kWMu).shape(), &dw_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(1 + kWMu).shape(), &dw_rho));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(1 + kBMu).shape(), &db_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, ctx->input(1 + kBMu).shape(), &db_rho));
    tfl::Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_FLOAT, tfl::TensorShape({conv_backward_workspace(p)}), &workspace));
    conv_backward(parallel_for(ctx), p, dy.flat<float>().data(), workspace.flat<float>().data(),
                  dx->flat<float>().data(), dw_mu->flat<float>().data(), dw_rho->flat<float>().data(),
                  db_mu->flat<float>().data(), db_rho->flat<float>().data());
  }
};

}  // namespace

#define FUSEDBNN_CONV_ATTRS                                      \
  Attr("Tseed: {int32, int64} = DT_INT64")                       \
      .Attr("strides: list(int) = [1, 1]")                       \
      .Attr("dilations: list(int) = [1, 1]")                     \
      .Attr("padding: {'VALID', 'SAME', 'EXPLICIT'} = 'VALID'")  \
      .Attr("explicit_paddings: list(int) = []")                 \
      .Attr("groups: int = 1")                                   \
      .Attr("data_format: {'NHWC', 'NCHW'} = 'NHWC'")            \
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
    .Doc("2-D convolution of x with a kernel [kh, kw, in/groups, out] and bias sampled inside the op; "
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
      c->set_output(0, c->input(1 + kX));
      c->set_output(1, c->input(1 + kWMu));
      c->set_output(2, c->input(1 + kWMu));
      c->set_output(3, c->input(1 + kBMu));
      c->set_output(4, c->input(1 + kBMu));
      return tfl::OkStatus();
    })
    .Doc("Gradients of FusedBnn>Conv2D for x, w_mu, w_rho, b_mu, b_rho, regenerating the noise.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Conv2D", Conv2DOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>Conv2DGrad", Conv2DGradOp);

}  // namespace tf
}  // namespace fusedbnn
