// CUDA Bayesian LSTM (plan in lstm_cuda.h). Every product runs through tiled_gemm.cuh; the
// recurrence is one launch per step and direction, with the cell update fused into the product's
// epilogue.
#include "gaussian_cuda.h"
#include "lstm_cuda.h"
#include "tiled_gemm.cuh"

namespace fusedbnn {
namespace cuda {
namespace {

// Column n = 4 j + gate of the recurrent product is W_h's column gate * H + j: a thread's four
// consecutive columns are the f, i, c, o gates of hidden unit j.
struct GateInterleaved {
  const float* w_h;  // [hidden, 4 hidden]
  int64_t hidden;
  static constexpr bool kContiguousCols = true;
  __device__ __forceinline__ float operator()(int64_t k, int64_t n) const {
    return w_h[k * 4 * hidden + (n % 4) * hidden + n / 4];
  }
};

// Epilogue of step t's product h_{t-1} W_h (columns interleaved as above): adds the input
// projection held in `gates`, applies the nonlinearities, stores them over it, and updates the
// cell and hidden state of unit j. h_last / c_last are set at the last step only.
struct CellForward {
  int64_t t, steps, hidden;
  float* gates;  // [batch, steps, 4 hidden]
  float* cells;  // [batch, steps, hidden]
  const float* c0;
  float* h_seq;
  float* h_last;
  float* c_last;
  __device__ __forceinline__ void operator()(int64_t b, int64_t n, const float acc[4]) const {
    const int64_t H = hidden, j = n / 4, row = b * steps + t;
    float* gate = gates + row * 4 * H + j;
    const float f = sigmoid(acc[0] + gate[0]);
    const float i = sigmoid(acc[1] + gate[H]);
    const float g = tanhf(acc[2] + gate[2 * H]);
    const float o = sigmoid(acc[3] + gate[3 * H]);
    gate[0] = f, gate[H] = i, gate[2 * H] = g, gate[3 * H] = o;
    const float c_prev = t == 0 ? c0[b * H + j] : cells[(row - 1) * H + j];
    const float c = f * c_prev + i * g;
    const float h = o * tanhf(c);
    cells[row * H + j] = c;
    h_seq[row * H + j] = h;
    if (h_last != nullptr) {
      h_last[b * H + j] = h;
      c_last[b * H + j] = c;
    }
  }
};

// The backward cell update of step t for unit (b, j), given the gradient reaching h_t through the
// recurrence: writes dz_t (pre-activation gate gradients) and dc_{t-1} = dc_t f. dc_in (dc_last at
// the last step, else dc itself) and dz may alias the buffers it reads: each element is read and
// written by the same thread.
struct CellBackward {
  int64_t t, steps, hidden;
  const float* gates;  // activated, [batch, steps, 4 hidden]
  const float* cells;
  const float* c0;
  const float* dh_seq;
  const float* dc_in;  // [batch, hidden]
  float* dc;
  float* dz;  // [batch, steps, 4 hidden]
  __device__ __forceinline__ void at(int64_t b, int64_t j, float dh_recurrent) const {
    const int64_t H = hidden, row = b * steps + t;
    const float* gate = gates + row * 4 * H + j;
    const float f = gate[0], i = gate[H], g = gate[2 * H], o = gate[3 * H];
    const float dh = dh_recurrent + dh_seq[row * H + j];
    const float tc = tanhf(cells[row * H + j]);
    const float dc_total = dc_in[b * H + j] + dh * o * (1.0f - tc * tc);
    const float c_prev = t == 0 ? c0[b * H + j] : cells[(row - 1) * H + j];
    float* out = dz + row * 4 * H + j;
    out[0] = dc_total * c_prev * f * (1.0f - f);
    out[H] = dc_total * g * i * (1.0f - i);
    out[2 * H] = dc_total * i * (1.0f - g * g);
    out[3 * H] = dh * tc * o * (1.0f - o);
    dc[b * H + j] = dc_total * f;
  }
  // As the epilogue of dh = dz_{t+1} W_h^T (columns are hidden units).
  __device__ __forceinline__ void operator()(int64_t b, int64_t n, const float acc[4]) const {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (n + q < hidden) at(b, n + q, acc[q]);
    }
  }
};

// The last step, where the recurrent gradient is dh_last.
__global__ void __launch_bounds__(kThreads)
    last_cell_backward_kernel(CellBackward cell, int64_t batch, const float* dh_last) {
  const int64_t total = batch * cell.hidden;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    cell.at(i / cell.hidden, i % cell.hidden, dh_last[i]);
  }
}

__global__ void __launch_bounds__(kThreads) copy_kernel(const float* src, int64_t n, float* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = src[i];
  }
}

cudaError_t copy(const float* src, int64_t n, float* dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  copy_kernel<<<grid_for(n), kThreads, 0, stream>>>(src, n, dst);
  return cudaGetLastError();
}

// h_prev[b, t] = h_{t-1}: h0 at t = 0, else h_seq[b, t - 1] (the inputs of dW_h).
__global__ void __launch_bounds__(kThreads) previous_hidden_kernel(const float* h0, const float* h_seq, int64_t batch,
                                                                   int64_t steps, int64_t hidden, float* h_prev) {
  const int64_t total = batch * steps * hidden;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / hidden, j = i % hidden;
    h_prev[i] = row % steps == 0 ? h0[row / steps * hidden + j] : h_seq[i - hidden];
  }
}

// A(m, r) of the weight-gradient product over all B T rows r: the inputs that multiplied W's row m,
// [x_t, h_{t-1}], and one more row of ones whose product with dz is db.
struct InputsAndOnes {
  const float* x;       // [rows, in]
  const float* h_prev;  // [rows, hidden]
  int64_t in, hidden;
  static constexpr bool kContiguousCols = false;
  __device__ __forceinline__ float operator()(int64_t m, int64_t r) const {
    if (m < in) return x[r * in + m];
    if (m < in + hidden) return h_prev[r * hidden + m - in];
    return 1.0f;
  }
};

// Rows [0, in + hidden) of that product are dW, the last one db.
struct WeightAndBiasGrad {
  float* dw;  // [in + hidden, cols]
  float* db;  // [cols]
  int64_t w_rows, cols;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
    float* out = m < w_rows ? dw + m * cols : db;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j < cols) out[n + j] = acc[j];
    }
  }
};

// Tiles of the large products over all steps: 128 x 128 (8 x 8 per thread, four shared-memory
// vector reads per 64 FMAs) when that still gives every multiprocessor a block, else 64 x 64.
template <class OpA, class OpB, class Epilogue>
cudaError_t wide_gemm(int multiprocessor_count, int64_t M, int64_t N, int64_t K, const OpA& a, const OpB& b,
                      const Epilogue& epilogue, cudaStream_t stream) {
  if ((M + 127) / 128 * ((N + 127) / 128) >= multiprocessor_count) {
    return tiled_gemm<128, 128, 8, 16, 2>(M, N, K, a, b, epilogue, stream);
  }
  return tiled_gemm<64, 64, 4, 16>(M, N, K, a, b, epilogue, stream);
}

// Tiles of the per-step products (batch rows, a few thousand columns at most): the largest tiles
// that still give every multiprocessor a block, else the smallest; small tiles split the
// contraction over 2 or 4 thread groups, so that every block has 256 threads. The expectation
// (not yet measured on a GPU): a step costs about its number of k stages in a row, each partly
// waiting on L2, so the stages are long (32) and the tiles small.
template <class OpA, class OpB, class Epilogue>
cudaError_t step_gemm(int multiprocessor_count, int64_t M, int64_t N, int64_t K, const OpA& a, const OpB& b,
                      const Epilogue& epilogue, cudaStream_t stream) {
  const auto blocks = [&](int64_t bm, int64_t bn) { return (M + bm - 1) / bm * ((N + bn - 1) / bn); };
  if (blocks(32, 64) >= multiprocessor_count) return tiled_gemm<32, 64, 2, 32>(M, N, K, a, b, epilogue, stream);
  if (blocks(16, 64) >= multiprocessor_count) return tiled_gemm<16, 64, 1, 32>(M, N, K, a, b, epilogue, stream);
  if (blocks(16, 32) >= multiprocessor_count) return tiled_gemm<16, 32, 1, 32, 1, 2>(M, N, K, a, b, epilogue, stream);
  return tiled_gemm<16, 16, 1, 32, 1, 4>(M, N, K, a, b, epilogue, stream);
}

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

__global__ void __launch_bounds__(1) add_kernel(const float* addend, float* sum) { *sum += *addend; }

// W and b sampled into w and b; with p.with_kl, *kl = the KL of W plus b's (kl_scratch: gaussian_kl's
// partial sums, then one float for b's KL).
cudaError_t sample_weights(const LstmParams& p, float* w, float* b, void* kl_scratch, float* kl, cudaStream_t stream) {
  const int64_t n = (p.in + p.hidden) * 4 * p.hidden, G = 4 * p.hidden;
  if (!p.with_kl) {
    const cudaError_t status = sample_gaussian(p.w_stream, n, p.w_mu, p.w_rho, w, stream);
    return status == cudaSuccess ? sample_gaussian(p.b_stream, G, p.b_mu, p.b_rho, b, stream) : status;
  }
  float* b_kl = reinterpret_cast<float*>(static_cast<char*>(kl_scratch) + round_up(gaussian_kl_scratch_bytes()));
  cudaError_t status = sample_gaussian_kl(p.w_stream, n, p.w_mu, p.w_rho, p.w_prior, kl_scratch, w, kl, stream);
  if (status == cudaSuccess) {
    status = sample_gaussian_kl(p.b_stream, G, p.b_mu, p.b_rho, p.b_prior, kl_scratch, b, b_kl, stream);
  }
  if (status != cudaSuccess) return status;
  add_kernel<<<1, 1, 0, stream>>>(b_kl, kl);
  return cudaGetLastError();
}

}  // namespace

size_t lstm_forward_scratch_bytes(const LstmParams& p) {
  const size_t kl = p.with_kl ? round_up(gaussian_kl_scratch_bytes()) + round_up(sizeof(float)) : 0;
  return round_up(sizeof(float) * 4 * p.hidden) + kl;
}

size_t lstm_backward_scratch_bytes(const LstmParams& p) {
  return round_up(sizeof(float) * p.batch * p.steps * p.hidden);
}

cudaError_t lstm_forward(const LstmParams& p, const LstmSaved& saved, void* scratch, float* h_seq, float* h_last,
                         float* c_last, cudaStream_t stream, float* kl) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  float* b = static_cast<float*>(scratch);
  const int sms = multiprocessors();
  cudaError_t status =
      sample_weights(p, saved.w, b, static_cast<char*>(scratch) + round_up(sizeof(float) * G), kl, stream);
  // x W_x + b of every step, where the gates of each step will be.
  if (status == cudaSuccess) {
    status = wide_gemm(sms, B * T, G, E, Strided<false>{p.x, E}, Strided<false>{saved.w, G},
                       StoreEpilogue{saved.gates, G, G, b}, stream);
  }
  if (T == 0) {
    if (status == cudaSuccess) status = copy(p.h0, B * H, h_last, stream);
    if (status == cudaSuccess) status = copy(p.c0, B * H, c_last, stream);
    return status;
  }
  const GateInterleaved w_h{saved.w + E * G, H};
  for (int64_t t = 0; t < T && status == cudaSuccess; ++t) {
    // h_{t-1}: h0, or column t - 1 of h_seq (row stride T H).
    const Strided<false> h_prev = t == 0 ? Strided<false>{p.h0, H} : Strided<false>{h_seq + (t - 1) * H, T * H};
    const bool last = t == T - 1;
    const CellForward cell{
        t, T, H, saved.gates, saved.cells, p.c0, h_seq, last ? h_last : nullptr, last ? c_last : nullptr};
    status = step_gemm(sms, B, G, H, h_prev, w_h, cell, stream);
  }
  return status;
}

cudaError_t lstm_backward(const LstmGradParams& p, float* dz, void* scratch, cudaStream_t stream) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  const Strided<true> w_h_transposed{p.fwd.w + E * G, G};  // (g, j) -> W_h[j, g]
  const int sms = multiprocessors();
  cudaError_t status = cudaSuccess;
  if (T == 0) {
    status = copy(p.dh_last, B * H, p.dh0, stream);
    if (status == cudaSuccess) status = copy(p.dc_last, B * H, p.dc0, stream);
  } else {
    // dc of the step being processed lives in dc0's buffer, which ends up holding dc0.
    CellBackward cell{T - 1, T, H, p.fwd.gates, p.fwd.cells, p.c0, p.dh_seq, p.dc_last, p.dc0, dz};
    if (B * H > 0) {
      last_cell_backward_kernel<<<grid_for(B * H), kThreads, 0, stream>>>(cell, B, p.dh_last);
      status = cudaGetLastError();
    }
    cell.dc_in = p.dc0;
    for (int64_t t = T - 1; t > 0 && status == cudaSuccess; --t) {
      // dh_{t-1} = dz_t W_h^T, then the cell of step t - 1.
      cell.t = t - 1;
      status = step_gemm(sms, B, H, G, Strided<false>{dz + t * G, T * G}, w_h_transposed, cell, stream);
    }
    if (status == cudaSuccess) {
      status = step_gemm(sms, B, H, G, Strided<false>{dz, T * G}, w_h_transposed, StoreEpilogue{p.dh0, H, H, nullptr},
                         stream);
    }
  }
  // dx = dz W_x^T over all steps.
  if (status == cudaSuccess) {
    status = wide_gemm(sms, B * T, E, G, Strided<false>{dz, G}, Strided<true>{p.fwd.w, G},
                       StoreEpilogue{p.dx, E, E, nullptr}, stream);
  }
  // [dW; db] = [x, h_prev, 1]^T dz over all steps.
  float* h_prev = static_cast<float*>(scratch);
  if (status == cudaSuccess && B * T * H > 0) {
    previous_hidden_kernel<<<grid_for(B * T * H), kThreads, 0, stream>>>(p.h0, p.fwd.h_seq, B, T, H, h_prev);
    status = cudaGetLastError();
  }
  if (status == cudaSuccess) {
    status = wide_gemm(sms, E + H + 1, G, B * T, InputsAndOnes{p.x, h_prev, E, H}, Strided<false>{dz, G},
                       WeightAndBiasGrad{p.dw_mu, p.db_mu, E + H, G}, stream);
  }
  if (status == cudaSuccess && p.dkl != nullptr) {
    status = sample_gaussian_grad_kl(p.w_stream, (E + H) * G, p.dw_mu, p.w_mu, p.w_rho, p.w_prior, p.dkl, p.dw_mu,
                                     p.dw_rho, stream);
    if (status == cudaSuccess) {
      status =
          sample_gaussian_grad_kl(p.b_stream, G, p.db_mu, p.b_mu, p.b_rho, p.b_prior, p.dkl, p.db_mu, p.db_rho, stream);
    }
  } else if (status == cudaSuccess) {
    status = sample_gaussian_grad(p.w_stream, (E + H) * G, p.dw_mu, nullptr, p.w_rho, p.dw_rho, nullptr, stream);
    if (status == cudaSuccess) {
      status = sample_gaussian_grad(p.b_stream, G, p.db_mu, nullptr, p.b_rho, p.db_rho, nullptr, stream);
    }
  }
  return status;
}

}  // namespace cuda
}  // namespace fusedbnn
