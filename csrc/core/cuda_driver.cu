// The driver check of cuda_driver.h, compiled with the toolkit whose runtime the kernels link.
#include <cuda_runtime_api.h>

#include "cuda_driver.h"

namespace fusedbnn {
namespace cuda {

std::string driver_error() {
  int driver_version = 0;
  if (cudaDriverGetVersion(&driver_version) != cudaSuccess) driver_version = 0;
  return cuda_driver_error(driver_version, CUDART_VERSION);
}

}  // namespace cuda
}  // namespace fusedbnn
