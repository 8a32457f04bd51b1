// Eigen's product compiled for one instruction set (flags in CMakeLists.txt).
#define Eigen fusedbnn_eigen_scalar
#include "gemm_impl.h"

namespace fusedbnn {

GemmTileFn gemm_tile_scalar() { return &gemm_tile; }

}  // namespace fusedbnn
