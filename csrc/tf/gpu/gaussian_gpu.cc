// GPU kernels of FusedBnn>SampleGaussian(Kl), SampleGaussianGrad, GaussianKl, GaussianKlAnalytic and their
// gradients.
#include "core/gaussian_cuda.h"
#include "tf/gaussian_kernel.h"
#include "tf/gpu/gpu_common.h"

namespace fusedbnn {
namespace tf {
namespace {

using In = GaussianInputs;

class SampleGaussianGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float* w;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &w));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian(in.stream, in.size(), in.mu_data(), in.rho_data(), w,
                                                            gpu_stream(ctx))));
  }
};

class SampleGaussianGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;  // its mu is dw
    float* drho;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "dw", In::kSeed, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &drho));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian_grad(in.stream, in.size(), in.mu_data(), nullptr,
                                                                 in.rho_data(), drho, nullptr, gpu_stream(ctx))));
  }
};

// The KL ops' scalar output (`index`) and their summation scratch.
struct KlOutput {
  tfl::Tensor scratch;
  void* scratch_data = nullptr;
  float* kl = nullptr;

  tfl::Status allocate(tfl::OpKernelContext* ctx, int index) {
    TF_RETURN_IF_ERROR(allocate_scalar(ctx, index, &kl));
    return allocate_scratch(ctx, cuda::gaussian_kl_scratch_bytes(), &scratch, &scratch_data);
  }
};

// The KL gradients' dkl (input `index`, a device scalar the kernel reads, so its terms are added
// whatever its value) and their outputs dmu and drho.
struct KlGradients {
  const float* dkl = nullptr;
  float* dmu = nullptr;
  float* drho = nullptr;

  tfl::Status read_and_allocate(tfl::OpKernelContext* ctx, const In& in, int index) {
    const tfl::Tensor& dkl_tensor = ctx->input(index);
    TF_RETURN_IF_ERROR(require_scalar_dkl(dkl_tensor));
    dkl = dkl_tensor.flat<float>().data();
    TF_RETURN_IF_ERROR(allocate_like_mu(ctx, in, 0, &dmu));
    return allocate_like_mu(ctx, in, 1, &drho);
  }
};

class GaussianKlGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    KlOutput out;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, out.allocate(ctx, 0));
    OP_REQUIRES_OK(ctx, launch_status(cuda::gaussian_kl(in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior,
                                                        out.scratch_data, out.kl, gpu_stream(ctx))));
  }
};

class SampleGaussianKlGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    float* w;
    KlOutput out;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, allocate_like_mu(ctx, in, 0, &w));
    OP_REQUIRES_OK(ctx, out.allocate(ctx, 1));
    OP_REQUIRES_OK(ctx,
                   launch_status(cuda::sample_gaussian_kl(in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior,
                                                          out.scratch_data, w, out.kl, gpu_stream(ctx))));
  }
};

class SampleGaussianKlGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    const tfl::Tensor& dw = ctx->input(0);
    In in;
    KlGradients grads;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, require_same_shape(*in.mu, "mu", dw, "dw"));
    OP_REQUIRES_OK(ctx, grads.read_and_allocate(ctx, in, 1));
    OP_REQUIRES_OK(ctx, launch_status(cuda::sample_gaussian_grad_kl(in.stream, in.size(), dw.flat<float>().data(),
                                                                    in.mu_data(), in.rho_data(), in.prior, grads.dkl,
                                                                    grads.dmu, grads.drho, gpu_stream(ctx))));
  }
};

class GaussianKlGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    KlGradients grads;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kSeed | In::kPrior, &in));
    OP_REQUIRES_OK(ctx, grads.read_and_allocate(ctx, in, 0));
    OP_REQUIRES_OK(ctx,
                   launch_status(cuda::gaussian_kl_grad(in.stream, in.size(), in.mu_data(), in.rho_data(), in.prior,
                                                        grads.dkl, grads.dmu, grads.drho, gpu_stream(ctx))));
  }
};

class GaussianKlAnalyticGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    KlOutput out;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kPrior, &in));
    OP_REQUIRES_OK(ctx, out.allocate(ctx, 0));
    OP_REQUIRES_OK(ctx, launch_status(cuda::gaussian_kl_analytic(in.size(), in.mu_data(), in.rho_data(), in.prior,
                                                                 out.scratch_data, out.kl, gpu_stream(ctx))));
  }
};

class GaussianKlAnalyticGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    In in;
    KlGradients grads;
    OP_REQUIRES_OK(ctx, read_gaussian_inputs(ctx, "mu", In::kPrior, &in));
    OP_REQUIRES_OK(ctx, grads.read_and_allocate(ctx, in, 0));
    OP_REQUIRES_OK(
        ctx, launch_status(cuda::gaussian_kl_analytic_grad(in.size(), in.mu_data(), in.rho_data(), in.prior, grads.dkl,
                                                           grads.dmu, grads.drho, gpu_stream(ctx))));
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
