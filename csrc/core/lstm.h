// Bayesian LSTM over a whole sequence on the CPU. W = mu + softplus(rho) * eps [in + hidden, 4 hidden]
// and b [4 hidden] are sampled once per call; gate order f, i, c, o along the last axis:
//   z = [x_t, h] W + b;  c = sig(f) c + sig(i) tanh(g);  h = sig(o) tanh(c).
// Per step: one GEMM h W_h for all four gates and one fused pass for the nonlinearities and the cell
// update (the input projection x W_x + b of all steps is one GEMM up front).
#pragma once

#include <cstdint>

#include "gaussian_prior.h"
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
  // The one-sample KL of the sample (docs/design.md, "The KL term"): with with_kl the forward also
  // writes *kl = sum(log q - log p) over W and b at the sample it draws, and the backward adds
  // *dkl times its gradient in the pass that regenerates the noise.
  bool with_kl = false;
  GaussianPrior w_prior{}, b_prior{};
};

// What the forward pass saves for the backward pass (besides h_seq): the sampled weight and the
// activated gates and cell state of every step.
struct LstmSaved {
  float* w;      // [in + hidden, 4 hidden]
  float* gates;  // [batch, steps, 4 hidden]: sig(f), sig(i), tanh(g), sig(o)
  float* cells;  // [batch, steps, hidden]
};

// Floats of the packed W_h both passes keep in scratch (panels of up to 32 columns, either way round).
int64_t lstm_packed_w_h_floats(int64_t hidden);

// Scratch: b [4 hidden], packed_w_h [lstm_packed_w_h_floats(hidden)].
struct LstmForwardScratch {
  float* b;
  float* packed_w_h;
};

// h_seq, h_last, c_last (and *kl with with_kl).
void lstm_forward(const ParallelFor& pf, const LstmParams& p, const LstmSaved& saved, const LstmForwardScratch& s,
                  float* h_seq, float* h_last, float* c_last, float* kl = nullptr);

// Scratch: dz [batch, steps, 4 hidden] (may be the saved gates' own buffer: step t's gates are read
// only before step t's dz overwrites them), h_prev [batch, steps, hidden], dh and dc [batch, hidden],
// packed_w_h [lstm_packed_w_h_floats(hidden)].
struct LstmBackwardScratch {
  float* dz;
  float* h_prev;
  float* dh;
  float* dc;
  float* packed_w_h;
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
  // With with_kl, the gradient of the KL output: one float (host memory on the CPU, device memory on
  // a GPU), or null where there is none (the CPU skips the KL terms then).
  const float* dkl = nullptr;
};

// Backpropagation through time.
void lstm_backward(const ParallelFor& pf, const LstmGradParams& p, const LstmBackwardScratch& s);

// One batch row of one step for the cell's forward pass: gates [4 hidden] holds the pre-activations
// z (f, i, c, o) and receives sig(f), sig(i), tanh(g), sig(o); then c = sig(f) c_prev + sig(i) tanh(g)
// and h = sig(o) tanh(c).
struct LstmCellForward {
  float* gates;
  const float* c_prev;
  float* c;
  float* h;
};

// The same row backwards: from the activated gates, c, c_prev, the gradient dh_seq of this step's
// output and dh, dc coming from step t + 1, writes dz [4 hidden] (the gradient of z; may be the gates
// themselves) and replaces dc by the gradient of c_prev. dh, the gradient of h_prev, is dz W_h^T.
struct LstmCellBackward {
  const float* gates;
  const float* c;
  const float* c_prev;
  const float* dh_seq;
  const float* dh;
  float* dc;
  float* dz;
};

// The per-step kernels of one instruction set: activations over n contiguous floats (in == out
// allowed), the cell of one row of `hidden` units, and the recurrent product
// C [rows, n] = A [rows, k] op(W) (or C += ...), op(W) [k, n] packed in panels of `panel` columns
// (lstm.cc's pack_panels).
struct LstmKernels {
  void (*sigmoid)(const float* in, float* out, int64_t n);
  void (*tanh)(const float* in, float* out, int64_t n);
  void (*cell_forward)(const LstmCellForward& row, int64_t hidden);
  void (*cell_backward)(const LstmCellBackward& row, int64_t hidden);
  int64_t panel;
  void (*recurrent_product)(const float* a, int64_t lda, int64_t rows, const float* packed, int64_t k, int64_t n,
                            float* c, int64_t ldc, bool accumulate);
};

// The fastest this CPU runs (polynomial exp for AVX2 / AVX-512, libm for scalar).
const LstmKernels& best_lstm_kernels();

}  // namespace fusedbnn
