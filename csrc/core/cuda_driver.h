// Whether this machine's NVIDIA driver can run the CUDA build. The CUDA runtime is linked
// statically (cmake/cuda.cmake) and needs a driver of at least its major version (CUDA 13:
// r580), while TensorFlow's own CUDA 12 runs on older drivers; with too old a driver every CUDA
// call fails, and the GPU kernels report this message instead of a bare launch error.
#pragma once

#include <string>

namespace fusedbnn {

// Versions as cudaDriverGetVersion and CUDART_VERSION give them (1000 * major + 10 * minor); a
// driver version of 0 means that no driver was found. Why that driver cannot run code built with
// that runtime, or "" when it can (a driver runs every runtime of its major version and older).
inline std::string cuda_driver_error(int driver_version, int runtime_version) {
  const int runtime_major = runtime_version / 1000, driver_major = driver_version / 1000;
  if (driver_major >= runtime_major) return "";
  const auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  // The first driver branch of each CUDA major version (CUDA's release notes, table 3).
  const char* branch = runtime_major >= 13 ? "r580" : runtime_major == 12 ? "r525" : "r450";
  const std::string found = driver_version == 0 ? "no NVIDIA driver was found"
                                                : "this machine's driver supports CUDA " + version(driver_version);
  return "fusedbnn's CUDA kernels were built with CUDA " + version(runtime_version) + " and need NVIDIA driver " +
         branch + " or newer for CUDA " + std::to_string(runtime_major) + "; " + found +
         ". Update the driver, or run fusedbnn's ops on the CPU.";
}

namespace cuda {
// cuda_driver_error for this machine's driver and the runtime the kernels were built with (CUDA
// builds only: cuda_driver.cu).
std::string driver_error();
}  // namespace cuda

}  // namespace fusedbnn
