// Shared pieces of the TensorFlow GPU kernels (compiled only with -DFUSEDBNN_CUDA=ON): the op's
// CUDA stream, launch-status checks, scratch, host-to-device staging, and the registration macro.
// Seeds stay in host memory; every kernel and copy is enqueued on TensorFlow's stream for the op,
// never synchronised.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>
#include <string>

#include "core/cuda_driver.h"
#include "tensorflow/core/common_runtime/device/device_event_mgr.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/common.h"
#include "xla/stream_executor/device_address.h"
#include "xla/stream_executor/stream.h"

namespace fusedbnn {
namespace tf {

inline cudaStream_t gpu_stream(tfl::OpKernelContext* ctx) {
  return static_cast<cudaStream_t>(ctx->op_device_context()->stream()->platform_specific_handle().stream);
}

// A failed launch: FailedPrecondition naming the driver required when the driver is too old for the
// CUDA runtime the kernels were built with (every call fails then), else Internal.
inline tfl::Status launch_status(cudaError_t status) {
  if (status == cudaSuccess) return tfl::OkStatus();
  static const std::string driver_error = cuda::driver_error();
  if (!driver_error.empty()) return tfl::errors::FailedPrecondition(driver_error);
  return tfl::errors::Internal("fusedbnn CUDA launch failed: ", cudaGetErrorString(status));
}

// `bytes` of device scratch owned by `holder` (alive until the kernels that use it have run:
// TensorFlow's GPU allocator orders the free after the work queued on the op's stream).
inline tfl::Status allocate_scratch(tfl::OpKernelContext* ctx, size_t bytes, tfl::Tensor* holder, void** data) {
  TF_RETURN_IF_ERROR(ctx->allocate_temp(tfl::DT_UINT8, tfl::TensorShape({static_cast<int64_t>(bytes)}), holder));
  *data = holder->flat<uint8_t>().data();
  return tfl::OkStatus();
}

// Pinned host memory (TensorFlow's GPU host allocator) to stage host-to-device copies in.
inline tfl::Status allocate_pinned(tfl::OpKernelContext* ctx, tfl::DataType dtype, const tfl::TensorShape& shape,
                                   tfl::Tensor* t) {
  tfl::AllocatorAttributes on_host;
  on_host.set_on_host(true);
  on_host.set_gpu_compatible(true);
  return ctx->allocate_temp(dtype, shape, t, on_host);
}

// One host-to-device copy: `bytes` from host `src` to device `dst`.
struct HostToDevice {
  const void* src;
  void* dst;
  size_t bytes;
};

// Enqueues copies out of the pinned tensor `staging` on the op's stream, and keeps `staging` alive
// until they have run: TensorFlow's event manager drops the last reference once the stream gets
// there, as TensorFlow's own kernels do (GpuDeviceArrayOnHost). Nothing waits.
inline tfl::Status copy_to_device(tfl::OpKernelContext* ctx, const tfl::Tensor& staging,
                                  std::initializer_list<HostToDevice> copies) {
  const auto* info = ctx->device()->tensorflow_accelerator_device_info();
  if (info == nullptr || info->event_mgr == nullptr) {  // checked first: no copy may outlive `staging`
    return tfl::errors::Internal("fusedbnn: no GPU event manager to release staging memory with");
  }
  auto* stream = ctx->op_device_context()->stream();
  tfl::Status status;
  for (const HostToDevice& c : copies) {
    if (c.bytes == 0) continue;
    stream_executor::DeviceAddressBase dst(c.dst, c.bytes);
    status = stream->Memcpy(&dst, c.src, c.bytes);
    if (!status.ok()) break;
  }
  // Even after a failed enqueue: the copies before it may still read `staging`.
  info->event_mgr->ThenExecute(stream, [staging]() {});  // the lambda's copy of `staging` is the reference
  return status;
}

}  // namespace tf
}  // namespace fusedbnn

// GPU kernels for both seed dtypes, each seed input (named in the variadic list) in host memory.
#define FUSEDBNN_REGISTER_GPU(name, kernel, ...)                                                                    \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_GPU).TypeConstraint<int32_t>("Tseed") __VA_ARGS__, \
                          kernel);                                                                                  \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_GPU).TypeConstraint<int64_t>("Tseed") __VA_ARGS__, \
                          kernel)
