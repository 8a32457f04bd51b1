// GPU kernels of FusedBnn>Linear and FusedBnn>LinearGrad.
#include "core/linear_cuda.h"
#include "tf/gpu/gpu_common.h"
#include "tf/linear_kernel.h"

namespace fusedbnn {
namespace tf {
namespace {

class LinearGpuOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    OP_REQUIRES_OK(ctx, read_params_and_priors(ctx, &p));
    p.with_kl = p.with_kl && kl_required(ctx);
    tfl::Tensor *y, *kl;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tfl::TensorShape({}), &kl));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::linear_forward_scratch_bytes(p), &scratch, &scratch_data));
    if (!p.with_kl) {
      OP_REQUIRES_OK(ctx, launch_status(cudaMemsetAsync(kl->flat<float>().data(), 0, sizeof(float), gpu_stream(ctx))));
    }
    OP_REQUIRES_OK(ctx, launch_status(cuda::linear_forward(p, scratch_data, y->flat<float>().data(), gpu_stream(ctx),
                                                           kl->flat<float>().data())));
  }
};

class LinearGradGpuOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    OP_REQUIRES_OK(ctx, read_params_and_priors(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    const tfl::Tensor* dkl;
    OP_REQUIRES_OK(ctx, ctx->input("dkl", &dkl));
    OP_REQUIRES_OK(ctx, require_scalar_dkl(*dkl));
    // dkl stays on the device: its terms are added (zero or not) in the pass that regenerates eps.
    if (g.with_kl) g.dkl = dkl->flat<float>().data();
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::linear_backward_scratch_bytes(g), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::linear_backward(g, scratch_data, gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>Linear", LinearGpuOp,
                      .HostMemory("w_seed").HostMemory("b_seed").HostMemory("w_std_prior").HostMemory("b_std_prior"));
FUSEDBNN_REGISTER_GPU("FusedBnn>LinearGrad", LinearGradGpuOp,
                      .HostMemory("w_seed").HostMemory("b_seed").HostMemory("w_std_prior").HostMemory("b_std_prior"));

}  // namespace tf
}  // namespace fusedbnn
