// GPU kernels of FusedBnn>SampleGaussian(Kl), SampleGaussianGrad, GaussianKl, GaussianKlAnalytic and their
// gradients.
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

// Allocates the scalar output kl (output `index`) and the summation scratch.
tfl::Status allocate_kl(tfl::OpKernelContext* ctx, tfl::Tensor* scratch, void** scratch_data, float** kl,
                        int index = 0) {
  tfl::Tensor* out;
  TF_RETURN_IF_ERROR(ctx->allocate_output(index, tfl::TensorShape({}), &out));
  *kl = out->flat<float>().data();
  return allocate_scratch(ctx, cuda::gaussian_kl_scratch_bytes(), scratch, scratch_data);
}

// Reads dkl (input `index`, a device scalar, read by the kernel) and allocates dmu and drho like mu.
tfl::Status read_dkl_allocate_grads(tfl::OpKernelContext* ctx, const tfl::Tensor& mu, const float** dkl, float** dmu,
                                    float** drho, int index = 0) {
  const tfl::Tensor& dkl_tensor = ctx->input(index);
  TF_RETURN_IF_ERROR(require_scalar_dkl(dkl_tensor));
  *dkl = dkl_tensor.flat<float>().data();
  tfl::Tensor *dmu_tensor, *drho_tensor;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, mu.shape(), &dmu_tensor));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, mu.shape(), &drho_tensor));
  *dmu = dmu_tensor->flat<float>().data();
  *drho = drho_tensor->flat<float>().data();
  return tfl::OkStatus();
}

class GaussianKlGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor scratch;
    void* scratch_data;
    float* kl;
    OP_REQUIRES_OK(ctx, allocate_kl(ctx, &scratch, &scratch_data, &kl));
    OP_REQUIRES_OK(
        ctx, launch_status(cuda::gaussian_kl(stream, mu->NumElements(), mu->flat<float>().data(),
                                             rho->flat<float>().data(), prior, scratch_data, kl, gpu_stream(ctx))));
  }
};

class SampleGaussianKlGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor* w;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, mu->shape(), &w));
    tfl::Tensor scratch;
    void* scratch_data;
    float* kl;
    OP_REQUIRES_OK(ctx, allocate_kl(ctx, &scratch, &scratch_data, &kl, 1));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian_kl(stream, mu->NumElements(), mu->flat<float>().data(),
                                                               rho->flat<float>().data(), prior, scratch_data,
                                                               w->flat<float>().data(), kl, gpu_stream(ctx))));
  }
};

// dkl stays on the device (its terms are added whatever its value).
class SampleGaussianKlGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dw = ctx->input(0);
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, require_same_shape(*mu, "mu", dw, "dw"));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    const float* dkl;
    float *dmu, *drho;
    OP_REQUIRES_OK(ctx, read_dkl_allocate_grads(ctx, *mu, &dkl, &dmu, &drho, 1));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian_grad_kl(stream, mu->NumElements(), dw.flat<float>().data(),
                                                                    mu->flat<float>().data(), rho->flat<float>().data(),
                                                                    prior, dkl, dmu, drho, gpu_stream(ctx))));
  }
};

class GaussianKlGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    NoiseStream stream;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho_seed(ctx, "mu", &mu, &rho, &stream));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    const float* dkl;
    float *dmu, *drho;
    OP_REQUIRES_OK(ctx, read_dkl_allocate_grads(ctx, *mu, &dkl, &dmu, &drho));
    OP_REQUIRES_OK(
        ctx, launch_status(cuda::gaussian_kl_grad(stream, mu->NumElements(), mu->flat<float>().data(),
                                                  rho->flat<float>().data(), prior, dkl, dmu, drho, gpu_stream(ctx))));
  }
};

class GaussianKlAnalyticGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho(ctx, "mu", &mu, &rho));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    tfl::Tensor scratch;
    void* scratch_data;
    float* kl;
    OP_REQUIRES_OK(ctx, allocate_kl(ctx, &scratch, &scratch_data, &kl));
    OP_REQUIRES_OK(ctx, launch_status(cuda::gaussian_kl_analytic(mu->NumElements(), mu->flat<float>().data(),
                                                                 rho->flat<float>().data(), prior, scratch_data, kl,
                                                                 gpu_stream(ctx))));
  }
};

class GaussianKlAnalyticGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor *mu, *rho;
    GaussianPrior prior;
    OP_REQUIRES_OK(ctx, read_mu_rho(ctx, "mu", &mu, &rho));
    OP_REQUIRES_OK(ctx, read_prior(ctx, *mu, &prior));
    const float* dkl;
    float *dmu, *drho;
    OP_REQUIRES_OK(ctx, read_dkl_allocate_grads(ctx, *mu, &dkl, &dmu, &drho));
    OP_REQUIRES_OK(ctx, launch_status(cuda::gaussian_kl_analytic_grad(mu->NumElements(), mu->flat<float>().data(),
                                                                      rho->flat<float>().data(), prior, dkl, dmu, drho,
                                                                      gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussian", SampleGaussianGpuOp, .HostMemory("seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussianGrad", SampleGaussianGradGpuOp, .HostMemory("seed"));
// std_prior is read on the host (the kernels take it by value); mu_prior stays on the device.
FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussianKl", SampleGaussianKlGpuOp, .HostMemory("seed").HostMemory("std_prior"));
FUSEDBNN_REGISTER_GPU("FusedBnn>SampleGaussianKlGrad", SampleGaussianKlGradGpuOp,
                      .HostMemory("seed").HostMemory("std_prior"));
FUSEDBNN_REGISTER_GPU("FusedBnn>GaussianKl", GaussianKlGpuOp, .HostMemory("seed").HostMemory("std_prior"));
FUSEDBNN_REGISTER_GPU("FusedBnn>GaussianKlGrad", GaussianKlGradGpuOp, .HostMemory("seed").HostMemory("std_prior"));
REGISTER_KERNEL_BUILDER(Name("FusedBnn>GaussianKlAnalytic").Device(::tensorflow::DEVICE_GPU).HostMemory("std_prior"),
                        GaussianKlAnalyticGpuOp);
REGISTER_KERNEL_BUILDER(
    Name("FusedBnn>GaussianKlAnalyticGrad").Device(::tensorflow::DEVICE_GPU).HostMemory("std_prior"),
    GaussianKlAnalyticGradGpuOp);

}  // namespace tf
}  // namespace fusedbnn
