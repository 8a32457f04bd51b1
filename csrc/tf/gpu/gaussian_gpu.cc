// GPU kernels of FusedBnn>SampleGaussian, SampleGaussianGrad, GaussianKl and GaussianKlGrad.
#include "core/gaussian_cuda.h"
#include "tf/gaussian_kernel.h"
#include "tf/gpu/gpu_common.h"

namespace fusedbnn {
namespace tf {
namespace {

class SampleGaussianGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    tfl::Tensor* w;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &w));
    OP_REQUIRES_OK(
        ctx, launch_status(cuda::sample_gaussian(stream, mu->NumElements(), mu->flat<float>().data(),
                                                 rho->flat<float>().data(), w->flat<float>().data(), gpu_stream(ctx))));
  }
};

class SampleGaussianGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *dw, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "dw", &dw, &rho, &stream));
    tfl::Tensor* drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, rho->shape(), &drho));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian_grad(
                            stream, rho->NumElements(), dw->flat<float>().data(), nullptr, rho->flat<float>().data(),
                            drho->flat<float>().data(), nullptr, gpu_stream(ctx))));
  }
};

class GaussianKlGpuOp : public tfl::OpKernel, PriorAttrs {
 public:
  explicit GaussianKlGpuOp(tfl::OpKernelConstruction* ctx) : OpKernel(ctx), PriorAttrs(ctx) {}
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    tfl::Tensor* kl;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({}), &kl));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::gaussian_kl_scratch_bytes(), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::gaussian_kl(stream, mu->NumElements(), mu->flat<float>().data(),
                                                        rho->flat<float>().data(), mu_prior_, std_prior_, scratch_data,
                                                        kl->flat<float>().data(), gpu_stream(ctx))));
  }
};

class GaussianKlGradGpuOp : public tfl::OpKernel, PriorAttrs {
 public:
  explicit GaussianKlGradGpuOp(tfl::OpKernelConstruction* ctx) : OpKernel(ctx), PriorAttrs(ctx) {}
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dkl = ctx->input(0);  // a device scalar, read by the kernel
    OP_REQUIRES_OK(ctx, require_scalar_dkl(dkl));
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    tfl::Tensor *dmu, *drho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &dmu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, mu->shape(), &drho));
    OP_REQUIRES_OK(
        ctx, launch_status(cuda::gaussian_kl_grad(
                 stream, mu->NumElements(), mu->flat<float>().data(), rho->flat<float>().data(), mu_prior_, std_prior_,
                 dkl.flat<float>().data(), dmu->flat<float>().data(), drho->flat<float>().data(), gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussian", SampleGaussianGpuOp, .HostMemory("seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussianGrad", SampleGaussianGradGpuOp, .HostMemory("seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>GaussianKl", GaussianKlGpuOp, .HostMemory("seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>GaussianKlGrad", GaussianKlGradGpuOp, .HostMemory("seed"));

}  // namespace tf
}  // namespace fusedbnn
