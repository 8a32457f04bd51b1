// Bayesian LSTM over a whole sequence on NVIDIA GPUs: the CUDA counterpart of lstm.h, on the same
// LstmParams, LstmSaved and LstmGradParams (device pointers). Functions only enqueue
// work on `stream` and return the launch status.
//
// Plan. Forward: W and b are sampled once into the saved w and scratch; the input projection
// x W_x + b of all steps is one product written where the gates go; then one kernel per step: the
// product h_{t-1} W_h for all four gates, with the nonlinearities and the cell update as its
// epilogue (its column tiles hold the four gates of the same hidden units, so each thread has all
// four gates of its units in registers). Backward: one kernel per step: dh_{t-1} = dz_t W_h^T with
// the backward cell update of step t - 1 as its epilogue, writing dz_{t-1}; then dx, dW_x and dW_h
// as three products over all steps, db as column sums, and the sampling gradient (noise
// regenerated) for W and b. No atomics: results are deterministic on a given GPU model.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "lstm.h"

namespace fusedbnn {
namespace cuda {

// Device scratch each call needs, in bytes.
size_t lstm_forward_scratch_bytes(const LstmParams& p);
size_t lstm_backward_scratch_bytes(const LstmParams& p);

// h_seq [batch, steps, hidden], h_last and c_last [batch, hidden]; `saved` as lstm_forward on the
// CPU fills it (the sampled W, the activated gates sig(f), sig(i), tanh(g), sig(o), the cells).
// With p.with_kl, *kl (one device float) is the KL of W and b, summed by gaussian_kl in its own pass.
cudaError_t lstm_forward(const LstmParams& p, const LstmSaved& saved, void* scratch, float* h_seq, float* h_last,
                         float* c_last, cudaStream_t stream, float* kl = nullptr);

// Backpropagation through time (with p.dkl, a device float, the KL's terms added where the noise is
// regenerated). dz [batch, steps, 4 hidden] receives the pre-activation gate
// gradients; it may be p.fwd.gates itself (each step's gates are read by the thread that then
// overwrites them with dz).
cudaError_t lstm_backward(const LstmGradParams& p, float* dz, void* scratch, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusedbnn
