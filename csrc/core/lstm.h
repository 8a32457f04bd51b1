// Bayesian LSTM over a whole sequence on the CPU. W = mu + softplus(rho) * eps [in + hidden, 4 hidden]
// and b [4 hidden] are sampled once per call; gate order f, i, c, o along the last axis:
//   z = [x_t, h] W + b;  c = sig(f) c + sig(i) tanh(g);  h = sig(o) tanh(c).
// Per step: one GEMM h W_h for all four gates and one fused pass for the nonlinearities and the cell
// update (the input projection x W_x + b of all steps is one GEMM up front).
#pragma once

#include <cstdint>

#include "noise.h"
#include "parallel.h"

namespace fusedbnn {

struct LstmParams {
  const float* x;  // [batch, steps, in]
  int64_t batch, steps, in, hidden;
  const float* w_mu;  // [in + hidden, 4 hidden]
  const float* w_rho;
  NoiseStream w_stream;
  const float* b_mu;  // [4 hidden]
  const float* b_rho;
  NoiseStream b_stream;
  const float* h0;  // [batch, hidden]
  const float* c0;
};

// What the forward pass saves for the backward pass (besides h_seq): the sampled weight and the
// activated gates and cell state of every step.
struct LstmSaved {
  float* w;      // [in + hidden, 4 hidden]
  float* gates;  // [batch, steps, 4 hidden]: sig(f), sig(i), tanh(g), sig(o)
  float* cells;  // [batch, steps, hidden]
};

// Scratch: z [batch, 4 hidden], b [4 hidden], row [batch, hidden].
struct LstmForwardScratch {
  float* z;
  float* b;
  float* row;
};

void lstm_forward(const ParallelFor& pf, const LstmParams& p, const LstmSaved& saved, const LstmForwardScratch& s,
                  float* h_seq, float* h_last, float* c_last);

// Scratch: dz [batch, steps, 4 hidden] (may be the saved gates' own buffer: step t's gates are read
// only before step t's dz overwrites them), h_prev [batch, steps, hidden], dh, dc and row
// [batch, hidden].
struct LstmBackwardScratch {
  float* dz;
  float* h_prev;
  float* dh;
  float* dc;
  float* row;
};

// What lstm_backward reads of the forward pass: LstmSaved and h_seq.
struct LstmForwardResult {
  const float* w;
  const float* gates;
  const float* cells;
  const float* h_seq;
};

// The backward pass: the forward parameters and results, the incoming gradients and where the
// gradients go.
struct LstmGradParams : LstmParams {
  LstmForwardResult fwd;
  const float* dh_seq;   // [batch, steps, hidden]
  const float* dh_last;  // [batch, hidden]
  const float* dc_last;
  float* dx;   // [batch, steps, in]
  float* dh0;  // [batch, hidden]
  float* dc0;
  float* dw_mu;  // [in + hidden, 4 hidden]
  float* dw_rho;
  float* db_mu;  // [4 hidden]
  float* db_rho;
};

// Backpropagation through time.
void lstm_backward(const ParallelFor& pf, const LstmGradParams& p, const LstmBackwardScratch& s);

// Elementwise activations of one instruction set, over n contiguous floats (in == out allowed).
struct ActivationKernels {
  void (*sigmoid)(const float* in, float* out, int64_t n);
  void (*tanh)(const float* in, float* out, int64_t n);
};

// The fastest this CPU runs (polynomial exp for AVX2 / AVX-512, libm for scalar).
const ActivationKernels& best_activations();

}  // namespace fusedbnn
