// GPU kernels of FusedBnn>Conv2D and FusedBnn>Conv2DGrad (Conv1d is the unit-height case).
#include "core/conv_cuda.h"
#include "tf/conv_kernel.h"
#include "tf/gpu/gpu_common.h"

namespace fusedbnn {
namespace tf {
namespace {

class ConvGpuBase : public ConvBase {
 public:
  using ConvBase::ConvBase;

 protected:
  // The CPU kernel's checks, then the sizes the CUDA kernels index with 32-bit integers.
  tfl::Status read_gpu_params(tfl::OpKernelContext* ctx, ConvParams* p) {
    TF_RETURN_IF_ERROR(read_params(ctx, p));
    if (const char* error = cuda::conv_size_error(*p)) return tfl::errors::InvalidArgument(error);
    return tfl::OkStatus();
  }
};

class Conv2DGpuOp : public ConvGpuBase {
 public:
  using ConvGpuBase::ConvGpuBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    ConvParams p;
    OP_REQUIRES_OK(ctx, read_gpu_params(ctx, &p));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, output_shape(p), &y));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::conv_forward_scratch_bytes(p), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::conv_forward(p, scratch_data, y->flat<float>().data(), gpu_stream(ctx))));
  }
};

class Conv2DGradGpuOp : public ConvGpuBase {
 public:
  using ConvGpuBase::ConvGpuBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    ConvGradParams g;
    OP_REQUIRES_OK(ctx, read_gpu_params(ctx, &g));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::conv_backward_scratch_bytes(g), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::conv_backward(g, scratch_data, gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>Conv2D", Conv2DGpuOp, .HostMemory("w_seed").HostMemory("b_seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>Conv2DGrad", Conv2DGradGpuOp, .HostMemory("w_seed").HostMemory("b_seed"));

}  // namespace tf
}  // namespace fusedbnn
