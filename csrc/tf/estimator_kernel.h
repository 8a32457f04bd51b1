// The per-example estimator ops of the linear layer (FusedBnn>FlipoutLinear,
// FusedBnn>LocalReparamLinear and their gradients): their inputs (the linear op's, then x_seed) and
// their OpKernels, shared by the CPU kernels (estimator_ops.cc) and the GPU kernels
// (gpu/estimator_gpu.cc). Tensor data pointers are read, never dereferenced; seeds are host tensors.
#pragma once

#include "core/estimators.h"
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
  // Also the rows of x per example (flipout's signs are per example): x [B, ..., in] has p->rows / B.
  tfl::Status read_estimator_params(tfl::OpKernelContext* ctx, LinearParams* p, NoiseStream* x_stream,
                                    int64_t* rows_per_example) {
    TF_RETURN_IF_ERROR(read_params(ctx, p));
    const tfl::Tensor* x;
    TF_RETURN_IF_ERROR(ctx->input("x", &x));
    const int64_t examples = x->dims() >= 2 ? x->dim_size(0) : 1;
    *rows_per_example = examples > 0 && p->rows > 0 ? p->rows / examples : 1;
    return read_seed(ctx, "x_seed", x_stream);
  }
};

// The forward op of an estimator: y, and y_std for local reparameterization (null for flipout).
// Backend runs the pass on its device:
//   static tfl::Status forward(tfl::OpKernelContext*, LinearEstimator, const LinearParams&,
//                              const NoiseStream& x_stream, int64_t rows_per_example, float* y, float* y_std);
//   static tfl::Status backward(tfl::OpKernelContext*, LinearEstimator, const LinearGradParams&,
//                               const NoiseStream& x_stream, int64_t rows_per_example, const float* y_std);
template <LinearEstimator kEstimator, class Backend>
class EstimatorOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearParams p;
    NoiseStream x_stream;
    int64_t rows_per_example;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &p, &x_stream, &rows_per_example));
    tfl::Tensor *y, *y_std = nullptr;
    OP_REQUIRES_OK(ctx, allocate_y(ctx, p, &y));
    if (kEstimator == LinearEstimator::kLocalReparam) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, y->shape(), &y_std));
    }
    OP_REQUIRES_OK(ctx, Backend::forward(ctx, kEstimator, p, x_stream, rows_per_example, y->flat<float>().data(),
                                         y_std != nullptr ? y_std->flat<float>().data() : nullptr));
  }
};

// The gradient op of an estimator; local reparameterization's reads the forward pass's y_std.
template <LinearEstimator kEstimator, class Backend>
class EstimatorGradOp : public EstimatorBase {
 public:
  using EstimatorBase::EstimatorBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    LinearGradParams g;
    NoiseStream x_stream;
    int64_t rows_per_example;
    OP_REQUIRES_OK(ctx, read_estimator_params(ctx, &g, &x_stream, &rows_per_example));
    OP_REQUIRES_OK(ctx, allocate_grads(ctx, &g));
    const float* y_std = nullptr;
    if (kEstimator == LinearEstimator::kLocalReparam) {
      const tfl::Tensor& y_std_tensor = ctx->input(1 + estimator_input::kYStd);
      OP_REQUIRES_OK(ctx, require_same_shape(ctx->input(0), "dy", y_std_tensor, "y_std"));
      y_std = y_std_tensor.flat<float>().data();
    }
    OP_REQUIRES_OK(ctx, Backend::backward(ctx, kEstimator, g, x_stream, rows_per_example, y_std));
  }
};

// Registers the four ops' kernels with Backend; REGISTER(name, kernel) is the device's registration
// macro (the GPU one with its host-memory seeds bound in).
#define FUSEDBNN_REGISTER_ESTIMATORS(REGISTER, Backend)                                             \
  using FlipoutLinear##Backend = EstimatorOp<LinearEstimator::kFlipout, Backend>;                   \
  using FlipoutLinearGrad##Backend = EstimatorGradOp<LinearEstimator::kFlipout, Backend>;           \
  using LocalReparamLinear##Backend = EstimatorOp<LinearEstimator::kLocalReparam, Backend>;         \
  using LocalReparamLinearGrad##Backend = EstimatorGradOp<LinearEstimator::kLocalReparam, Backend>; \
  REGISTER("FusedBnn>FlipoutLinear", FlipoutLinear##Backend);                                       \
  REGISTER("FusedBnn>FlipoutLinearGrad", FlipoutLinearGrad##Backend);                               \
  REGISTER("FusedBnn>LocalReparamLinear", LocalReparamLinear##Backend);                             \
  REGISTER("FusedBnn>LocalReparamLinearGrad", LocalReparamLinearGrad##Backend)

}  // namespace tf
}  // namespace fusedbnn
