// GPU kernels of FusedBnn>Lstm and FusedBnn>LstmGrad.
#include "core/lstm_cuda.h"
#include "tf/gpu/gpu_common.h"
#include "tf/lstm_kernel.h"

namespace fusedbnn {
namespace tf {
namespace {

class LstmGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmParams p;
    OP_REQUIRES_OK(ctx, read_lstm_params(ctx, 0, &p));
    LstmOutputs out;
    OP_REQUIRES_OK(ctx, allocate_lstm_outputs(ctx, &p, &out));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::lstm_forward_scratch_bytes(p), &scratch, &scratch_data));
    if (!p.with_kl) OP_REQUIRES_OK(ctx, launch_status(cudaMemsetAsync(out.kl, 0, sizeof(float), gpu_stream(ctx))));
    OP_REQUIRES_OK(ctx, launch_status(cuda::lstm_forward(p, out.saved, scratch_data, out.h_seq, out.h_last, out.c_last,
                                                         gpu_stream(ctx), out.kl)));
  }
};

class LstmGradGpuOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(tfl::OpKernelContext* ctx) override {
    LstmGradParams p;
    OP_REQUIRES_OK(ctx, read_lstm_params(ctx, lstm_input::kGradPrefix, &p));
    tfl::Tensor dz_holder;
    float* dz;
    OP_REQUIRES_OK(ctx, prepare_lstm_grad(ctx, &p, &dz_holder, &dz));
    // dkl stays on the device: its terms are added (zero or not) in the pass that regenerates eps.
    if (p.with_kl) p.dkl = data(ctx->input(lstm_input::kDkl));
    tfl::Tensor scratch;
    void* scratch_data;
    OP_REQUIRES_OK(ctx, allocate_scratch(ctx, cuda::lstm_backward_scratch_bytes(p), &scratch, &scratch_data));
    OP_REQUIRES_OK(ctx, launch_status(cuda::lstm_backward(p, dz, scratch_data, gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>Lstm", LstmGpuOp,
                      .HostMemory("w_seed").HostMemory("b_seed").HostMemory("w_std_prior").HostMemory("b_std_prior"));
FUSEDBNN_REGISTER_GPU("FusedBnn>LstmGrad", LstmGradGpuOp,
                      .HostMemory("w_seed").HostMemory("b_seed").HostMemory("w_std_prior").HostMemory("b_std_prior"));

}  // namespace tf
}  // namespace fusedbnn
