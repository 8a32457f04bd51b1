// Input checks shared by the CPU kernels of the Gaussian ops (gaussian_ops.cc) and their GPU
// kernels (gpu/gaussian_gpu.cc).
#pragma once

#include <string>

#include "core/gaussian_prior.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

// Reads mu (input `mu_name`) and rho, checking that their shapes agree.
inline tfl::Status read_mu_rho(tfl::OpKernelContext* ctx, const char* mu_name, const tfl::Tensor** mu,
                               const tfl::Tensor** rho) {
  TF_RETURN_IF_ERROR(ctx->input(mu_name, mu));
  TF_RETURN_IF_ERROR(ctx->input("rho", rho));
  return require_same_shape(**mu, mu_name, **rho, "rho");
}

// Reads the prior inputs `mu_prior` (a scalar or of mu's shape) and `std_prior` (a positive
// scalar; on a GPU a host-memory input, mu_prior a device one), or those named `prefix` + them.
inline tfl::Status read_prior(tfl::OpKernelContext* ctx, const tfl::Tensor& mu, GaussianPrior* prior,
                              const std::string& prefix = "") {
  const tfl::Tensor *mean, *std;
  TF_RETURN_IF_ERROR(ctx->input(prefix + "mu_prior", &mean));
  TF_RETURN_IF_ERROR(ctx->input(prefix + "std_prior", &std));
  const bool per_element = mean->shape() == mu.shape() && !tfl::TensorShapeUtils::IsScalar(mean->shape());
  if (!per_element && !tfl::TensorShapeUtils::IsScalar(mean->shape())) {
    return tfl::errors::InvalidArgument(prefix, "mu_prior must be a scalar or have ", prefix, "mu's shape ",
                                        mu.shape().DebugString(), ", got ", mean->shape().DebugString());
  }
  if (!tfl::TensorShapeUtils::IsScalar(std->shape())) {
    return tfl::errors::InvalidArgument(prefix, "std_prior must be a scalar, got shape ", std->shape().DebugString());
  }
  const float std_value = std->scalar<float>()();
  if (!(std_value > 0.0f)) {
    return tfl::errors::InvalidArgument(prefix, "std_prior must be positive, got ", std_value);
  }
  *prior = GaussianPrior{mean->flat<float>().data(), per_element, std_value};
  return tfl::OkStatus();
}

// What a Gaussian op reads: mu (or, for SampleGaussianGrad, dw) and rho of one shape, and as the op
// needs them the seed (input "seed") and the prior (inputs "mu_prior", "std_prior").
struct GaussianInputs {
  enum : unsigned { kSeed = 1, kPrior = 2 };
  const tfl::Tensor* mu = nullptr;
  const tfl::Tensor* rho = nullptr;
  NoiseStream stream;
  GaussianPrior prior;

  int64_t size() const { return mu->NumElements(); }
  const float* mu_data() const { return mu->flat<float>().data(); }
  const float* rho_data() const { return rho->flat<float>().data(); }
};

inline tfl::Status read_gaussian_inputs(tfl::OpKernelContext* ctx, const char* mu_name, unsigned extra,
                                        GaussianInputs* in) {
  TF_RETURN_IF_ERROR(read_mu_rho(ctx, mu_name, &in->mu, &in->rho));
  if (extra & GaussianInputs::kSeed) TF_RETURN_IF_ERROR(read_seed(ctx, "seed", &in->stream));
  if (extra & GaussianInputs::kPrior) TF_RETURN_IF_ERROR(read_prior(ctx, *in->mu, &in->prior));
  return tfl::OkStatus();
}

// Output `index` shaped like mu.
inline tfl::Status allocate_like_mu(tfl::OpKernelContext* ctx, const GaussianInputs& in, int index, float** data) {
  tfl::Tensor* out;
  TF_RETURN_IF_ERROR(ctx->allocate_output(index, in.mu->shape(), &out));
  *data = out->flat<float>().data();
  return tfl::OkStatus();
}

// The scalar output `index` (a KL).
inline tfl::Status allocate_scalar(tfl::OpKernelContext* ctx, int index, float** data) {
  tfl::Tensor* out;
  TF_RETURN_IF_ERROR(ctx->allocate_output(index, tfl::TensorShape({}), &out));
  *data = out->flat<float>().data();
  return tfl::OkStatus();
}

inline tfl::Status require_scalar_dkl(const tfl::Tensor& dkl) {
  if (!tfl::TensorShapeUtils::IsScalar(dkl.shape())) {
    return tfl::errors::InvalidArgument("dkl must be a scalar, got shape ", dkl.shape().DebugString());
  }
  return tfl::OkStatus();
}

}  // namespace tf
}  // namespace fusedbnn
