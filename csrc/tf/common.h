// Shared pieces of the TensorFlow bindings: seeds, the thread pool, argument checks.
#pragma once

#include <string>

#include "core/noise.h"
#include "core/parallel.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace fusedbnn {
namespace tf {

namespace tfl = ::tensorflow;

// A [2] int32/int64 seed input, read on the host, as the key and counter of its noise stream.
inline tfl::Status read_seed(tfl::OpKernelContext* ctx, const char* name, NoiseStream* stream) {
  const tfl::Tensor* seed;
  TF_RETURN_IF_ERROR(ctx->input(name, &seed));
  if (seed->dims() != 1 || seed->dim_size(0) != 2) {
    return tfl::errors::InvalidArgument(name, " must be a seed of shape [2], got shape ", seed->shape().DebugString());
  }
  if (seed->dtype() == tfl::DT_INT32) {
    const auto v = seed->flat<int32_t>();
    *stream = stream_from_seed(v(0), v(1));
  } else {
    const auto v = seed->flat<int64_t>();
    *stream = stream_from_seed(v(0), v(1));
  }
  return tfl::OkStatus();
}

inline ParallelFor parallel_for(tfl::OpKernelContext* ctx) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  return [pool](int64_t units, int64_t cost, const std::function<void(int64_t, int64_t)>& fn) {
    if (units > 0) pool->ParallelFor(units, cost, fn);
  };
}

inline tfl::Status require_same_shape(const tfl::Tensor& a, const char* a_name, const tfl::Tensor& b,
                                      const char* b_name) {
  if (a.shape() != b.shape()) {
    return tfl::errors::InvalidArgument(b_name, " must have the shape of ", a_name, " ", a.shape().DebugString(),
                                        ", got ", b.shape().DebugString());
  }
  return tfl::OkStatus();
}

inline tfl::Status require_rank(const tfl::Tensor& t, const char* name, int rank) {
  if (t.dims() != rank) {
    return tfl::errors::InvalidArgument(name, " must have rank ", rank, ", got shape ", t.shape().DebugString());
  }
  return tfl::OkStatus();
}

// The optional bias inputs b_mu, b_rho ([out], same shape) and b_seed, read into *b_mu, *b_rho and
// *stream. `out_what` names what the length must match in the error.
inline tfl::Status read_bias(tfl::OpKernelContext* ctx, int64_t out, const char* out_what, const float** b_mu,
                             const float** b_rho, NoiseStream* stream) {
  const tfl::Tensor *mu, *rho;
  TF_RETURN_IF_ERROR(ctx->input("b_mu", &mu));
  TF_RETURN_IF_ERROR(ctx->input("b_rho", &rho));
  TF_RETURN_IF_ERROR(require_rank(*mu, "b_mu", 1));
  TF_RETURN_IF_ERROR(require_same_shape(*mu, "b_mu", *rho, "b_rho"));
  if (mu->dim_size(0) != out) {
    return tfl::errors::InvalidArgument("b_mu must have ", out_what, " (", out, "), got shape ",
                                        mu->shape().DebugString());
  }
  *b_mu = mu->flat<float>().data();
  *b_rho = rho->flat<float>().data();
  return read_seed(ctx, "b_seed", stream);
}

// A layer's gradient op (inputs: dy, then the forward op's): checks dy against the forward output's
// shape and allocates outputs dx, dw_mu, dw_rho, db_mu, db_rho shaped like the forward inputs at
// indices x, w_mu, w_mu, b_mu, b_mu.
template <class GradParams>  // LinearGradParams or ConvGradParams
tfl::Status read_dy_and_allocate_grads(tfl::OpKernelContext* ctx, const tfl::TensorShape& y_shape, int x, int w_mu,
                                       int b_mu, GradParams* g) {
  const tfl::Tensor& dy = ctx->input(0);
  if (dy.shape() != y_shape) {
    return tfl::errors::InvalidArgument("dy must have shape ", y_shape.DebugString(), ", got ",
                                        dy.shape().DebugString());
  }
  g->dy = dy.flat<float>().data();
  const int like[] = {x, w_mu, w_mu, b_mu, b_mu};
  float** outputs[] = {&g->dx, &g->dw_mu, &g->dw_rho, &g->db_mu, &g->db_rho};
  for (int i = 0; i < 5; ++i) {
    tfl::Tensor* t;
    TF_RETURN_IF_ERROR(ctx->allocate_output(i, ctx->input(1 + like[i]).shape(), &t));
    *outputs[i] = t->flat<float>().data();
  }
  return tfl::OkStatus();
}

// A shape-function error prefixed with what was expected of which input.
inline tfl::Status named(const tfl::Status& s, const std::string& what) {
  if (s.ok()) return s;
  return tfl::errors::InvalidArgument(what, ": ", s.message());
}

// Shape function of a layer's gradient op (inputs: dy, then the forward op's): outputs dx, dw_mu,
// dw_rho, db_mu, db_rho take the shapes of the forward inputs at indices x, w_mu, w_mu, b_mu, b_mu.
inline void set_layer_grad_shapes(tfl::shape_inference::InferenceContext* c, int x, int w_mu, int b_mu) {
  const int like[] = {x, w_mu, w_mu, b_mu, b_mu};
  for (int i = 0; i < 5; ++i) c->set_output(i, c->input(1 + like[i]));
}

inline tfl::Status seed_shape(tfl::shape_inference::InferenceContext* c, int index, const char* name) {
  tfl::shape_inference::ShapeHandle seed;
  tfl::shape_inference::DimensionHandle two;
  tfl::Status s = c->WithRank(c->input(index), 1, &seed);
  if (s.ok()) s = c->WithValue(c->Dim(seed, 0), 2, &two);
  return named(s, std::string(name) + " must be a seed of shape [2]");
}

}  // namespace tf
}  // namespace fusedbnn

// CPU kernels for both seed dtypes.
#define FUSEDBNN_REGISTER_CPU(name, kernel)                                                                      \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_CPU).TypeConstraint<int32_t>("Tseed"), kernel); \
  REGISTER_KERNEL_BUILDER(Name(name).Device(::tensorflow::DEVICE_CPU).TypeConstraint<int64_t>("Tseed"), kernel)
