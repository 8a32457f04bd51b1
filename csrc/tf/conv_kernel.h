// The attributes and input checks of FusedBnn>Conv2D and FusedBnn>Conv2DGrad, shared by their CPU
// kernels (conv_ops.cc) and GPU kernels (gpu/conv_gpu.cc). Tensor data pointers are read, never
// dereferenced: they are device pointers on the GPU; the seeds are host tensors on both.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "core/conv.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

// Inputs shared by both ops, at these positions after Conv2DGrad's leading dy.
namespace conv_input {
enum Index : int { kX, kWMu, kWRho, kWSeed, kBMu, kBRho, kBSeed };
}  // namespace conv_input

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
      return tfl::errors::InvalidArgument("strides must be 2 positive ints [h, w], got [", absl::StrJoin(strides, ", "),
                                          "]");
    if (dilations.size() != 2 || dilations[0] < 1 || dilations[1] < 1)
      return tfl::errors::InvalidArgument("dilations must be 2 positive ints [h, w], got [",
                                          absl::StrJoin(dilations, ", "), "]");
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
      TF_RETURN_IF_ERROR(read_bias(ctx, p->out_channels, "w_mu's out channels", &p->b_mu, &p->b_rho, &p->b_stream));
    }
    return tfl::OkStatus();
  }

  tfl::TensorShape output_shape(const ConvParams& p) const {
    return attrs_.channels_last ? tfl::TensorShape({p.batch, p.out_h, p.out_w, p.out_channels})
                                : tfl::TensorShape({p.batch, p.out_channels, p.out_h, p.out_w});
  }

  // Conv2DGrad: checks dy against y's shape and allocates the gradients like their inputs.
  tfl::Status allocate_grads(tfl::OpKernelContext* ctx, ConvGradParams* g) {
    return read_dy_and_allocate_grads(ctx, output_shape(*g), conv_input::kX, conv_input::kWMu, conv_input::kBMu, g);
  }

  ConvAttrs attrs_;
};

}  // namespace tf
}  // namespace fusedbnn
