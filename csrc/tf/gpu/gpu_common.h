// Shared pieces of the TensorFlow GPU kernels (compiled only with -DFUSEDBNN_CUDA=ON): the op's
// CUDA stream, launch-status checks, scratch, and the registration macro. Seeds stay in host
// memory; every kernel is enqueued on TensorFlow's stream for the op, never synchronised.
#pragma once

#include <cuda_runtime_api.h>

#include "tensorflow/core/framework/op_kernel.h"
#include "tf/common.h"
#include "xla/stream_executor/stream.h"

namespace fusedbnn {
namespace tf {

inline cudaStream_t gpu_stream(tfl::OpKernelContext* ctx) {
  return static_cast<cudaStream_t>(ctx->op_device_context()->stream()->platform_specific_handle().stream);
}

inline tfl::Status launch_status(cudaError_t status) {
  if (status == cudaSuccess) return tfl::OkStatus();
  return tfl::errors::Internal("fusedbnn CUDA launch failed: ", cudaGetErrorString(status));
}

// `bytes` of device scratch owned by `holder` (alive until the kernels that use it have run:
// TensorFlow's GPU allocator orders the free after the work queued on the op's stream).
inline tfl::Status allocate_scratch(tfl::OpKernelContext* ctx, size_t bytes, tfl::Tensor* holder, void** data) {
  TF_RETURN_IF_ERROR(
      ctx->allocate_temp(tfl::DT_UINT8, tfl::TensorShape({static_cast<int64_t>(bytes)}), holder));
  *data = holder->flat<uint8_t>().data();
  return tfl::OkStatus();
}

}  // namespace tf
}  // namespace fusedbnn

// GPU kernels for both seed dtypes, each seed input (named in the variadic list) in host memory.
#define FUSEDBNN_REGISTER_GPU(name, kernel, ...)                                                      \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_GPU).TypeConstraint<int32_t>("Tseed") \
                              __VA_ARGS__, kernel);                                                    \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_GPU).TypeConstraint<int64_t>("Tseed") \
                              __VA_ARGS__, kernel)
