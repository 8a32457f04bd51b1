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
    OP_REQUIRES_OK(ctx, read_params(ctx, &p));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::linear_forward_scratch_bytes(p), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::linear_forward(p, scratch_data, y->flat<float>().data(), gpu_stream(ctx))));
  }
};

class LinearGradGpuOp : public LinearBase {
 public:
  using LinearBase::LinearBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    OP_REQUIRES_OK(ctx, read_params(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::linear_backward_scratch_bytes(g), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::linear_backward(g, scratch_data, gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>Linear", LinearGpuOp, .HostMemory("w_seed").HostMemory("b_seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>LinearGrad", LinearGradGpuOp, .HostMemory("w_seed").HostMemory("b_seed"));

}  // namespace tf
}  // namespace fusedbnn
