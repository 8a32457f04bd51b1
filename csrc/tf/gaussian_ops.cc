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

class SampleGaussianOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    tfl::Tensor* w;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &w));
    sample_gaussian(parallel_for(ctx), stream, mu->NumElements(), mu->flat<float>().data(), rho->flat<float>().data(),
                    w->flat<float>().data());
  }
};

class SampleGaussianGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *dw, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "dw", &dw, &rho, &stream));
    tfl::Tensor* drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, rho->shape(), &drho));
    sample_gaussian_grad(parallel_for(ctx), stream, rho->NumElements(), dw->flat<float>().data(), nullptr,
                         rho->flat<float>().data(), drho->flat<float>().data(), nullptr);
  }
};

class SampleGaussianKlOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor *w, *kl;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &w));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tfl::TensorShape({}), &kl));
    if (!ctx->output_required(1)) {  // a graph that never reads kl (a predict step): the plain sample
      kl->scalar<float>()() = 0.0f;
      sample_gaussian(parallel_for(ctx), stream, mu->NumElements(), mu->flat<float>().data(), rho->flat<float>().data(),
                      w->flat<float>().data());
      return;
    }
    kl->scalar<float>()() = sample_gaussian_kl(parallel_for(ctx), stream, mu->NumElements(), mu->flat<float>().data(),
                                               rho->flat<float>().data(), prior, w->flat<float>().data());
  }
};

class SampleGaussianKlGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dw = ctx->input(0);
    const tfl::Tensor& dkl = ctx->input(1);
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, require_same_shape(*mu, "mu", dw, "dw"));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor* drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, mu->shape(), &drho));
    const float scale = dkl.scalar<float>()();
    if (scale == 0.0f) {  // the kl output unused: dmu is dw itself, drho the plain sampling gradient
      ctx->set_output(0, dw);
      sample_gaussian_grad(parallel_for(ctx), stream, mu->NumElements(), dw.flat<float>().data(), nullptr,
                           rho->flat<float>().data(), drho->flat<float>().data(), nullptr);
      return;
    }
    tfl::Tensor* dmu;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &dmu));
    sample_gaussian_grad_kl(parallel_for(ctx), stream, mu->NumElements(), dw.flat<float>().data(),
                            mu->flat<float>().data(), rho->flat<float>().data(), prior, scale,
                            dmu->flat<float>().data(), drho->flat<float>().data());
  }
};

class GaussianKlOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor* kl;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({}), &kl));
    kl->scalar<float>()() = gaussian_kl(parallel_for(ctx), stream, mu->NumElements(), mu->flat<float>().data(),
                                        rho->flat<float>().data(), prior);
  }
};

class GaussianKlGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dkl = ctx->input(0);
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor *dmu, *drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &dmu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, mu->shape(), &drho));
    gaussian_kl_grad(parallel_for(ctx), stream, mu->NumElements(), mu->flat<float>().data(), rho->flat<float>().data(),
                     prior, dkl.scalar<float>()(), dmu->flat<float>().data(), drho->flat<float>().data());
  }
};

class GaussianKlAnalyticOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho(ctx, "mu", &mu, &rho));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor* kl;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({}), &kl));
    kl->scalar<float>()() = gaussian_kl_analytic(parallel_for(ctx), mu->NumElements(), mu->flat<float>().data(),
                                                 rho->flat<float>().data(), prior);
  }
};

class GaussianKlAnalyticGradOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dkl = ctx->input(0);
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    const tfl::Tensor *mu, *rho;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho(ctx, "mu", &mu, &rho));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor *dmu, *drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &dmu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, mu->shape(), &drho));
    gaussian_kl_analytic_grad(parallel_for(ctx), mu->NumElements(), mu->flat<float>().data(), rho->flat<float>().data(),
                              prior, dkl.scalar<float>()(), dmu->flat<float>().data(), drho->flat<float>().data());
  }
};

}  // namespace

FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussian", SampleGaussianOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianGrad", SampleGaussianGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianKl", SampleGaussianKlOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>SampleGaussianKlGrad", SampleGaussianKlGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>GaussianKl", GaussianKlOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>GaussianKlGrad", GaussianKlGradOp);
REGISTER_KERNEL_BUILDER(Name("FusedBnn>GaussianKlAnalytic").Device(::tensorflow::DEVICE_CPU), GaussianKlAnalyticOp);
REGISTER_KERNEL_BUILDER(Name("FusedBnn>GaussianKlAnalyticGrad").Device(::tensorflow::DEVICE_CPU),
                        GaussianKlAnalyticGradOp);

}  // namespace tf
}  // namespace fusedbnn
