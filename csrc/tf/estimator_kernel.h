// The inputs of the per-example estimator ops of the linear layer (FusedBnn>FlipoutLinear,
// FusedBnn>LocalReparamLinear and their gradients): the linear op's, then x_seed.
#pragma once

#include "tf/linear_kernel.h"

namespace fusedbnn {
namespace tf {

namespace estimator_input {
enum Index : int { kXSeed = linear_input::kBSeed + 1, kYStd };  // kYStd: LocalReparamLinearGrad only
}  // namespace estimator_input

// The linear op's shapes plus x_seed's, for the forward inputs starting at `first`.
inline tfl::Status estimator_shapes(tfl::shape_inference::InferenceContext* c, int first,
                                    tfl::shape_inference::ShapeHandle* y) {
  TF_RETURN_IF_ERROR(linear_shapes(c, first, y));
  return seed_shape(c, first + estimator_input::kXSeed, "x_seed");
}

class EstimatorBase : public LinearBase {
 public:
  using LinearBase::LinearBase;

 protected:
  tfl::Status read_estimator_params(tfl::OpKernelContext* ctx, LinearParams* p, NoiseStream* x_stream) {
    TF_RETURN_IF_ERROR(read_params(ctx, p));
    return read_seed(ctx, "x_seed", x_stream);
  }
};

}  // namespace tf
}  // namespace fusedbnn
