// GPU kernels of FusedBnn>FlipoutLinear, FusedBnn>LocalReparamLinear and their gradients.
#include "core/estimators_cuda.h"
#include "tf/estimator_kernel.h"
#include "tf/gpu/gpu_common.h"

namespace fusedbnn {
namespace tf {
namespace {

// The CUDA pass of either estimator (core/estimators_cuda.h), with its scratch.
struct GpuEstimators {
  static tfl::Status forward(tfl::OpKernelContext* ctx, LinearEstimator estimator, const LinearParams& p,
                             const NoiseStream& x_stream, int64_t rows_per_example, float* y, float* y_std) {
    tfl::Tensor scratch;
    void* scratch_data;
    TF_RETURN_IF_ERROR(
        allocate_scratch(ctx, cuda::estimator_forward_scratch_bytes(estimator, p), &scratch, &scratch_data));
    const cudaStream_t stream = gpu_stream(ctx);
    return launch_status(estimator == LinearEstimator::kFlipout
                             ? cuda::flipout_linear_forward(p, x_stream, rows_per_example, scratch_data, y, stream)
                             : cuda::local_reparam_linear_forward(p, x_stream, scratch_data, y, y_std, stream));
  }
  static tfl::Status backward(tfl::OpKernelContext* ctx, LinearEstimator estimator, const LinearGradParams& g,
                              const NoiseStream& x_stream, int64_t rows_per_example, const float* y_std) {
    tfl::Tensor scratch;
    void* scratch_data;
    TF_RETURN_IF_ERROR(
        allocate_scratch(ctx, cuda::estimator_backward_scratch_bytes(estimator, g), &scratch, &scratch_data));
    const cudaStream_t stream = gpu_stream(ctx);
    return launch_status(estimator == LinearEstimator::kFlipout
                             ? cuda::flipout_linear_backward(g, x_stream, rows_per_example, scratch_data, stream)
                             : cuda::local_reparam_linear_backward(g, x_stream, y_std, scratch_data, stream));
  }
};

// The seeds in host memory.
#define FUSEDBNN_REGISTER_ESTIMATOR_GPU(name, kernel) \
  FUSEDBNN_REGISTER_GPU(name, kernel, .HostMemory("w_seed").HostMemory("b_seed").HostMemory("x_seed"))

}  // namespace

FUSEDBNN_REGISTER_ESTIMATORS(FUSEDBNN_REGISTER_ESTIMATOR_GPU, GpuEstimators);

}  // namespace tf
}  // namespace fusedbnn
