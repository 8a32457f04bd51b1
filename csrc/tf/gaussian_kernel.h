// Input checks shared by the CPU kernels of the Gaussian ops (gaussian_ops.cc) and their GPU
// kernels (gpu/gaussian_gpu.cc).
#pragma once

#include "tf/common.h"

namespace fusedbnn {
namespace tf {

// Checks rho against mu and reads the seed; both kernels of a pair share it.
inline tfl::Status read_mu_rho_seed(tfl::OpKernelContext* ctx, const char* mu_name, const tfl::Tensor** mu,
                                    const tfl::Tensor** rho, NoiseStream* stream) {
  TF_RETURN_IF_ERROR(ctx->input(mu_name, mu));
  TF_RETURN_IF_ERROR(ctx->input("rho", rho));
  TF_RETURN_IF_ERROR(require_same_shape(**mu, mu_name, **rho, "rho"));
  return read_seed(ctx, "seed", stream);
}

class PriorAttrs {
 public:
  explicit PriorAttrs(tfl::OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mu_prior", &mu_prior_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("std_prior", &std_prior_));
    OP_REQUIRES(ctx, std_prior_ > 0.0f, tfl::errors::InvalidArgument("std_prior must be positive, got ", std_prior_));
  }

 protected:
  float mu_prior_ = 0.0f, std_prior_ = 0.1f;
};

inline tfl::Status require_scalar_dkl(const tfl::Tensor& dkl) {
  if (!tfl::TensorShapeUtils::IsScalar(dkl.shape())) {
    return tfl::errors::InvalidArgument("dkl must be a scalar, got shape ", dkl.shape().DebugString());
  }
  return tfl::OkStatus();
}

}  // namespace tf
}  // namespace fusedbnn
