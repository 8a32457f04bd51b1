// The input checks and output allocation of FusedBnn>Lstm and FusedBnn>LstmGrad, shared by their
// CPU kernels (lstm_ops.cc) and GPU kernels (gpu/lstm_gpu.cc). Tensor data pointers are read, never
// dereferenced: they are device pointers on the GPU; the seeds are host tensors on both.
#pragma once

#include "core/lstm.h"
#include "tf/common.h"
#include "tf/gaussian_kernel.h"

namespace fusedbnn {
namespace tf {

// Inputs shared by both ops, at these positions after LstmGrad's leading dh_seq, dh_last, dc_last.
namespace lstm_input {
enum Index : int {
  kX,
  kWMu,
  kWRho,
  kWSeed,
  kBMu,
  kBRho,
  kBSeed,
  kH0,
  kC0,
  kWMuPrior,
  kWStdPrior,
  kBMuPrior,
  kBStdPrior
};
constexpr int kGradPrefix = 3;
// LstmGrad's inputs after the shared ones: the forward outputs the backward pass reads, then dkl.
enum SavedIndex : int { kHSeq = kGradPrefix + kBStdPrior + 1, kW, kGates, kCells, kDkl };
}  // namespace lstm_input

// Lstm's kl output, after h_seq, h_last, c_last and the three saved for the gradient.
constexpr int kLstmKlOutput = 6;

inline tfl::Status require_shape(const tfl::Tensor& t, const char* name, const tfl::TensorShape& shape) {
  if (t.shape() != shape) {
    return tfl::errors::InvalidArgument(name, " must have shape ", shape.DebugString(), ", got ",
                                        t.shape().DebugString());
  }
  return tfl::OkStatus();
}

inline float* data(tfl::Tensor* t) { return t->flat<float>().data(); }
inline const float* data(const tfl::Tensor& t) { return t.flat<float>().data(); }

// Reads and validates the shared inputs (shape functions only run when graphs are built).
inline tfl::Status read_lstm_params(tfl::OpKernelContext* ctx, int first, LstmParams* p) {
  const tfl::Tensor& x = ctx->input(first + lstm_input::kX);
  const tfl::Tensor& w_mu = ctx->input(first + lstm_input::kWMu);
  if (x.dims() != 3) {
    return tfl::errors::InvalidArgument("x must be [batch, steps, in], got shape ", x.shape().DebugString());
  }
  TF_RETURN_IF_ERROR(require_rank(w_mu, "w_mu", 2));
  TF_RETURN_IF_ERROR(require_same_shape(w_mu, "w_mu", ctx->input(first + lstm_input::kWRho), "w_rho"));
  p->batch = x.dim_size(0);
  p->steps = x.dim_size(1);
  p->in = x.dim_size(2);
  const int64_t gates = w_mu.dim_size(1);
  if (gates == 0 || gates % 4 != 0) {
    return tfl::errors::InvalidArgument("w_mu must be [in + hidden, 4 hidden] with hidden > 0, got shape ",
                                        w_mu.shape().DebugString());
  }
  p->hidden = gates / 4;
  TF_RETURN_IF_ERROR(require_shape(w_mu, "w_mu", tfl::TensorShape({p->in + p->hidden, gates})));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + lstm_input::kBMu), "b_mu", tfl::TensorShape({gates})));
  TF_RETURN_IF_ERROR(
      require_same_shape(ctx->input(first + lstm_input::kBMu), "b_mu", ctx->input(first + lstm_input::kBRho), "b_rho"));
  const tfl::TensorShape state({p->batch, p->hidden});
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + lstm_input::kH0), "h0", state));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(first + lstm_input::kC0), "c0", state));
  p->x = data(x);
  p->w_mu = data(w_mu);
  p->w_rho = data(ctx->input(first + lstm_input::kWRho));
  p->b_mu = data(ctx->input(first + lstm_input::kBMu));
  p->b_rho = data(ctx->input(first + lstm_input::kBRho));
  p->h0 = data(ctx->input(first + lstm_input::kH0));
  p->c0 = data(ctx->input(first + lstm_input::kC0));
  TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->w_stream));
  TF_RETURN_IF_ERROR(read_seed(ctx, "b_seed", &p->b_stream));
  // The priors are read only for the KL output.
  TF_RETURN_IF_ERROR(GetNodeAttr(ctx->op_kernel().def(), "with_kl", &p->with_kl));
  if (!p->with_kl) return tfl::OkStatus();
  TF_RETURN_IF_ERROR(read_prior(ctx, w_mu, &p->w_prior, "w_"));
  return read_prior(ctx, ctx->input(first + lstm_input::kBMu), &p->b_prior, "b_");
}

// Lstm's outputs: h_seq, h_last, c_last, what the gradient reads, and kl (device memory on a GPU).
struct LstmOutputs {
  float *h_seq, *h_last, *c_last;
  LstmSaved saved;
  float* kl;
};

// Allocates Lstm's outputs. A graph that never reads kl (a predict step of a layer that asks for
// the KL when traced) skips the KL's work: p->with_kl is cleared then, and the kernel writes 0.
inline tfl::Status allocate_lstm_outputs(tfl::OpKernelContext* ctx, LstmParams* p, LstmOutputs* out) {
  p->with_kl = p->with_kl && ctx->output_required(kLstmKlOutput);
  const int64_t B = p->batch, T = p->steps, H = p->hidden;
  const tfl::TensorShape shapes[] = {{B, T, H},     {B, H},    {B, H}, ctx->input(lstm_input::kWMu).shape(),
                                     {B, T, 4 * H}, {B, T, H}, {}};
  float** pointers[] = {&out->h_seq,       &out->h_last,      &out->c_last, &out->saved.w,
                        &out->saved.gates, &out->saved.cells, &out->kl};
  for (int i = 0; i <= kLstmKlOutput; ++i) {
    tfl::Tensor* t;
    TF_RETURN_IF_ERROR(ctx->allocate_output(i, shapes[i], &t));
    *pointers[i] = data(t);
  }
  return tfl::OkStatus();
}

// Validates LstmGrad's own inputs against the forward parameters in p (read by
// read_lstm_params(ctx, lstm_input::kGradPrefix, p)), fills in the rest of p (the incoming gradients,
// the forward outputs it reads, its outputs, allocated) and allocates *dz [batch, steps, 4 hidden]
// (held by dz_holder), which takes over the saved gates' buffer when nothing else holds it (as in a
// traced training step).
inline tfl::Status prepare_lstm_grad(tfl::OpKernelContext* ctx, LstmGradParams* p, tfl::Tensor* dz_holder, float** dz) {
  const int64_t B = p->batch, T = p->steps, H = p->hidden;
  const tfl::TensorShape seq({B, T, H}), state({B, H}), gates({B, T, 4 * H});
  TF_RETURN_IF_ERROR(require_shape(ctx->input(0), "dh_seq", seq));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(1), "dh_last", state));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(2), "dc_last", state));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(lstm_input::kHSeq), "h_seq", seq));
  TF_RETURN_IF_ERROR(
      require_shape(ctx->input(lstm_input::kW), "w", ctx->input(lstm_input::kGradPrefix + lstm_input::kWMu).shape()));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(lstm_input::kGates), "gates", gates));
  TF_RETURN_IF_ERROR(require_shape(ctx->input(lstm_input::kCells), "cells", seq));
  TF_RETURN_IF_ERROR(require_scalar_dkl(ctx->input(lstm_input::kDkl)));
  p->dh_seq = data(ctx->input(0));
  p->dh_last = data(ctx->input(1));
  p->dc_last = data(ctx->input(2));
  p->fwd = LstmForwardResult{data(ctx->input(lstm_input::kW)), data(ctx->input(lstm_input::kGates)),
                             data(ctx->input(lstm_input::kCells)), data(ctx->input(lstm_input::kHSeq))};
  const tfl::TensorShape shapes[] = {ctx->input(lstm_input::kGradPrefix + lstm_input::kX).shape(),
                                     ctx->input(lstm_input::kGradPrefix + lstm_input::kWMu).shape(),
                                     ctx->input(lstm_input::kGradPrefix + lstm_input::kWMu).shape(),
                                     ctx->input(lstm_input::kGradPrefix + lstm_input::kBMu).shape(),
                                     ctx->input(lstm_input::kGradPrefix + lstm_input::kBMu).shape(),
                                     state,
                                     state};
  float** pointers[] = {&p->dx, &p->dw_mu, &p->dw_rho, &p->db_mu, &p->db_rho, &p->dh0, &p->dc0};
  for (int i = 0; i < 7; ++i) {
    tfl::Tensor* t;
    TF_RETURN_IF_ERROR(ctx->allocate_output(i, shapes[i], &t));
    *pointers[i] = data(t);
  }
  TF_RETURN_IF_ERROR(ctx->forward_input_or_allocate_temp({lstm_input::kGates}, tfl::DT_FLOAT, gates, dz_holder));
  *dz = data(dz_holder);
  return tfl::OkStatus();
}

}  // namespace tf
}  // namespace fusedbnn
