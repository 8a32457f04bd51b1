// Eigen's product compiled for one instruction set (flags in CMakeLists.txt).
#define Eigen fusedbnn_eigen_avx512
#include "gemm_impl.h"

namespace fusedbnn {

GemmTileFn gemm_tile_avx512() { return &gemm_tile; }

}  // namespace fusedbnn
