// FusedBnn>NextSeed: one step of a layer's noise stream, taken atomically. keras.random.SeedGenerator's
// next() reads its state and then assigns state + [0, 1] in a second op, so calls of one layer running
// at once (Python threads, a server's concurrent requests to an exported model) could read the same
// state and sample the same weights. This op does both under the variable's lock.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

REGISTER_OP("FusedBnn>NextSeed")
    .Input("state: resource")
    .Output("seed: int64")
    .SetIsStateful()
    .SetShapeFn([](tfl::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(2));
      return tfl::OkStatus();
    })
    .Doc(
        "The state [2] of the int64 variable `state` (a keras.random.SeedGenerator's), which it then "
        "advances to state + [0, 1], as SeedGenerator.next() does, but in one step under the variable's "
        "lock: concurrent calls never return the same seed.");

class NextSeedOp : public tfl::OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(tfl::OpKernelContext* ctx) override {
    tfl::core::RefCountPtr<tfl::Var> var;
    OP_REQUIRES_OK(ctx, tfl::LookupResource(ctx, tfl::HandleFromInput(ctx, 0), &var));
    tfl::Tensor* seed;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({2}), &seed));
    tfl::Tensor next;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_INT64, tfl::TensorShape({2}), &next));
    tfl::mutex_lock lock(*var->mu());
    const tfl::Tensor* state = var->tensor();
    OP_REQUIRES(ctx, var->is_initialized,
                tfl::errors::FailedPrecondition("state names a variable that is not initialized"));
    OP_REQUIRES(ctx, state->dtype() == tfl::DT_INT64 && state->shape() == tfl::TensorShape({2}),
                tfl::errors::InvalidArgument("state must be an int64 variable of shape [2], got ",
                                             tfl::DataTypeString(state->dtype()), " ", state->shape().DebugString()));
    const auto current = state->flat<int64_t>();
    seed->flat<int64_t>() = current;
    next.flat<int64_t>()(0) = current(0);
    // Wraps as the int64 addition of the SeedGenerator it replaces (two's complement).
    next.flat<int64_t>()(1) = static_cast<int64_t>(static_cast<uint64_t>(current(1)) + 1);
    // A new buffer, as AssignVariableOp does: tensors read before keep their values.
    *var->tensor() = next;
  }
};

REGISTER_KERNEL_BUILDER(Name("FusedBnn>NextSeed").Device(tfl::DEVICE_CPU), NextSeedOp);

}  // namespace tf
}  // namespace fusedbnn
