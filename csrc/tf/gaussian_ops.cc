// FusedBnn>SampleGaussian(Kl), FusedBnn>GaussianKl, FusedBnn>GaussianKlAnalytic and their fused gradients.
#include "core/gaussian.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/gaussian_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::InferenceContext;

namespace {

tfl::Status mu_rho_shapes(InferenceContext* c, int mu, int rho) {
  tfl::shape_inference::ShapeHandle merged;
  return named(c->Merge(c->input(mu), c->input(rho), &merged), "rho must have the shape of mu");
}

tfl::Status mu_rho_seed_shapes(InferenceContext* c, int mu, int rho, int seed) {
  TF_RETURN_IF_ERROR(mu_rho_shapes(c, mu, rho));
  return seed_shape(c, seed, "seed");
}

// mu_prior: a scalar or mu's shape (checked at run time when unknown here); std_prior: a scalar.
tfl::Status prior_shapes(InferenceContext* c, int mu, int mu_prior, int std_prior) {
  tfl::shape_inference::ShapeHandle unused;
  const auto mean = c->input(mu_prior);
  if (c->RankKnown(mean) && c->Rank(mean) != 0) {
    TF_RETURN_IF_ERROR(named(c->Merge(mean, c->input(mu), &unused), "mu_prior must be a scalar or have mu's shape"));
  }
  return named(c->WithRank(c->input(std_prior), 0, &unused), "std_prior must be a scalar");
}

}  // namespace

REGISTER_OP("FusedBnn>SampleGaussian")
    .Input("mu: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Output("w: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 0, 1, 2));
      c->set_output(0, c->input(0));
      return tfl::OkStatus();
    })
    .Doc("w = mu + softplus(rho) * eps, eps = stateless_normal(shape(mu), seed), eps never stored.");

REGISTER_OP("FusedBnn>SampleGaussianGrad")
    .Input("dw: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Output("drho: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 0, 1, 2));
      c->set_output(0, c->input(1));
      return tfl::OkStatus();
    })
    .Doc("drho = dw * eps * sigmoid(rho), regenerating eps from the seed.");

REGISTER_OP("FusedBnn>SampleGaussianKl")
    .Input("mu: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("w: float")
    .Output("kl: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 0, 1, 2));
      TF_RETURN_IF_ERROR(prior_shapes(c, 0, 3, 4));
      c->set_output(0, c->input(0));
      c->set_output(1, c->Scalar());
      return tfl::OkStatus();
    })
    .Doc("SampleGaussian's w and GaussianKl's kl at that sample, from one pass over the noise.");

REGISTER_OP("FusedBnn>SampleGaussianKlGrad")
    .Input("dw: float")
    .Input("dkl: float")
    .Input("mu: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("dmu: float")
    .Output("drho: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 2, 3, 4));
      TF_RETURN_IF_ERROR(prior_shapes(c, 2, 5, 6));
      c->set_output(0, c->input(2));
      c->set_output(1, c->input(2));
      return tfl::OkStatus();
    })
    .Doc("The gradients of SampleGaussianKl for mu and rho in one pass regenerating the noise.");

REGISTER_OP("FusedBnn>GaussianKl")
    .Input("mu: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("kl: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 0, 1, 2));
      TF_RETURN_IF_ERROR(prior_shapes(c, 0, 3, 4));
      c->set_output(0, c->Scalar());
      return tfl::OkStatus();
    })
    .Doc(
        "sum(log N(w; mu, softplus(rho))) - sum(log N(w; mu_prior, std_prior)) at the sample w; mu_prior is a "
        "scalar or has mu's shape.");

REGISTER_OP("FusedBnn>GaussianKlGrad")
    .Input("dkl: float")
    .Input("mu: float")
    .Input("rho: float")
    .Input("seed: Tseed")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("dmu: float")
    .Output("drho: float")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_seed_shapes(c, 1, 2, 3));
      TF_RETURN_IF_ERROR(prior_shapes(c, 1, 4, 5));
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(1));
      return tfl::OkStatus();
    });

REGISTER_OP("FusedBnn>GaussianKlAnalytic")
    .Input("mu: float")
    .Input("rho: float")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("kl: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_shapes(c, 0, 1));
      TF_RETURN_IF_ERROR(prior_shapes(c, 0, 2, 3));
      c->set_output(0, c->Scalar());
      return tfl::OkStatus();
    })
    .Doc(
        "sum(KL(N(mu, softplus(rho)^2) || N(mu_prior, std_prior^2))), in closed form; mu_prior is a scalar or has "
        "mu's shape.");

REGISTER_OP("FusedBnn>GaussianKlAnalyticGrad")
    .Input("dkl: float")
    .Input("mu: float")
    .Input("rho: float")
    .Input("mu_prior: float")
    .Input("std_prior: float")
    .Output("dmu: float")
    .Output("drho: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(mu_rho_shapes(c, 1, 2));
      TF_RETURN_IF_ERROR(prior_shapes(c, 1, 3, 4));
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(1));
      return tfl::OkStatus();
    });

namespace {

using In = GaussianInputs;

class SampleGaussianOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float* w;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &w));
    sample_gaussian(parallel_for(ctx), in.stream, in.size(), in.mu_data(), in.rho_data(), w);
  }
};

class SampleGaussianGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;  // its mu is dw
    float* drho;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "dw", In::kSeed, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &drho));
    sample_gaussian_grad(parallel_for(ctx), in.stream, in.size(), in.mu_data(), nullptr, in.rho_data(), drho, nullptr);
  }
};

class SampleGaussianKlOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float *w, *kl;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &w));
    OP_REQUIRES_OK(ctx, allocate_scalar(ctx, 1, &kl));
    if (!ctx->output_required(1)) {  // a graph that never reads kl (a predict step): the plain sample
      *kl = 0.0f;
      sample_gaussian(parallel_for(ctx), in.stream, in.size(), in.mu_data(), in.rho_data(), w);
      return;
    }
    *kl = sample_gaussian_kl(parallel_for(ctx), in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior, w);
  }
};

class SampleGaussianKlGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dw = ctx->input(0);
    const tfl::Tensor& dkl = ctx->input(1);
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    In in;
    float *dmu, *drho;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, require_same_shape(*in.mu, "mu", dw, "dw"));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 1, &drho));
    const float scale = dkl.scalar<float>()();
    if (scale == 0.0f) {  // the kl output unused: dmu is dw itself, drho the plain sampling gradient
      ctx->set_output(0, dw);
      sample_gaussian_grad(parallel_for(ctx), in.stream, in.size(), dw.flat<float>().data(), nullptr, in.rho_data(),
                           drho, nullptr);
      return;
    }
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &dmu));
    sample_gaussian_grad_kl(parallel_for(ctx), in.stream, in.size(), dw.flat<float>().data(), in.mu_data(),
                            in.rho_data(), in.prior, scale, dmu, drho);
  }
};

class GaussianKlOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float* kl;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, allocate_scalar(ctx, 0, &kl));
    *kl = gaussian_kl(parallel_for(ctx), in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior);
  }
};

class GaussianKlAnalyticOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float* kl;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kPrior, &in));
    OP_REQUIRES_OK(ctx, allocate_scalar(ctx, 0, &kl));
    *kl = gaussian_kl_analytic(parallel_for(ctx), in.size(), in.mu_data(), in.rho_data(), in.prior);
  }
};

// GaussianKlGrad and GaussianKlAnalyticGrad: dkl (input 0) and the forward's inputs; dmu and drho.
template <bool kSampled>
class GaussianKlGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dkl = ctx->input(0);
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    In in;
    float *dmu, *drho;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", kSampled ? In::kSeed | In::kPrior : In::kPrior, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &dmu));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 1, &drho));
    const float scale = dkl.scalar<float>()();
    if (kSampled) {
      gaussian_kl_grad(parallel_for(ctx), in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior, scale, dmu,
                       drho);
    } else {
      gaussian_kl_analytic_grad(parallel_for(ctx), in.size(), in.mu_data(), in.rho_data(), in.prior, scale, dmu, drho);
    }
  }
};

}  // namespace

FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussian", SampleGaussianOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianGrad", SampleGaussianGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianKl", SampleGaussianKlOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianKlGrad", SampleGaussianKlGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>GaussianKl", GaussianKlOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>GaussianKlGrad", GaussianKlGradOp<true>);
REGISTER_KERNEL_BUILDER(Name("FusedBnn>GaussianKlAnalytic").Device(::tensorflow::DEVICE_CPU), GaussianKlAnalyticOp);
REGISTER_KERNEL_BUILDER(Name("FusedBnn>GaussianKlAnalyticGrad").Device(::tensorflow::DEVICE_CPU),
                        GaussianKlGradOp<false>);

}  // namespace tf
}  // namespace fusedbnn
