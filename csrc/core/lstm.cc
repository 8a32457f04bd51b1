#include "lstm.h"

#include <algorithm>
#include <cstring>

#include "cpu_features.h"
#include "gaussian.h"
#include "gemm.h"

namespace fusedbnn {

namespace {

// memcpy of n floats; empty tensors may have null data, which memcpy must not get even for n == 0.
void copy_floats(float* dst, const float* src, int64_t n) {
  if (n > 0) std::memcpy(dst, src, n * sizeof(float));
}

}  // namespace

const LstmKernels& scalar_lstm_kernels();
#if defined(FUSEDBNN_HAVE_AVX2)
const LstmKernels& avx2_lstm_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
const LstmKernels& avx512_lstm_kernels();
#endif

const LstmKernels& best_lstm_kernels() {
  switch (active_isa()) {
#if defined(FUSEDBNN_HAVE_AVX512)
    case Isa::kAvx512:
      return avx512_lstm_kernels();
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
    case Isa::kAvx2:
      return avx2_lstm_kernels();
#endif
    default:
      return scalar_lstm_kernels();
  }
}

namespace {

constexpr int64_t kCyclesPerElement = 20;

// Rows of the batch, each a unit of the fused per-step passes.
template <class Fn>
void for_rows(const ParallelFor& pf, int64_t rows, int64_t width, Fn fn) {
  pf(rows, width * kCyclesPerElement, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) fn(r);
  });
}

// The narrowest tile of C in the weight gradients (GemmArgs::min_tile; gemm's default is 64): they
// contract over all B T rows, and each tile packs x or h_prev again (17.5 instead of 21.5 ms with
// AVX2 at the benchmark's shape, benchmarks/NOTES.md).
constexpr int64_t kTile = 256;

// op(W) [k, n] (W^T when trans) in panels of `panel` columns, each [k, panel], the last zero-padded:
// the layout of LstmKernels::recurrent_product. W_h is packed once per pass instead of once per step
// and chunk, as gemm would.
void pack_panels(const float* w, int64_t ldw, bool trans, int64_t k, int64_t n, int64_t panel, float* packed) {
  for (int64_t p0 = 0; p0 < n; p0 += panel) {
    const int64_t width = std::min(panel, n - p0);
    for (int64_t kk = 0; kk < k; ++kk) {
      float* out = packed + p0 * k + kk * panel;
      for (int64_t j = 0; j < width; ++j) out[j] = trans ? w[(p0 + j) * ldw + kk] : w[kk * ldw + p0 + j];
      std::fill(out + width, out + panel, 0.0f);
    }
  }
}

// Batch rows are independent through the whole recurrence: each chunk of rows runs every step on
// its own, so the pool is entered once per pass instead of twice per step. Chunks have at least 16
// rows (each block of rows streams the whole packed W_h every step) and there are at most 8; the
// cut depends on the batch alone, and no row's arithmetic depends on it.
template <class Fn>
void for_batch_chunks(const ParallelFor& pf, int64_t batch, int64_t cost_per_row, Fn fn) {
  const int64_t rows = std::max<int64_t>(16, ceil_div(batch, 8));
  pf(ceil_div(batch, rows), rows * cost_per_row, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) fn(chunk * rows, std::min(batch, (chunk + 1) * rows));
  });
}

}  // namespace

int64_t lstm_packed_w_h_floats(int64_t hidden) { return 4 * hidden * ((hidden + 31) / 32 * 32); }

void lstm_forward(const ParallelFor& pf, const LstmParams& p, const LstmSaved& saved, const LstmForwardScratch& s,
                  float* h_seq, float* h_last, float* c_last, float* kl) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  const LstmKernels& act = best_lstm_kernels();
  if (p.with_kl) {
    *kl = sample_gaussian_kl(pf, p.w_stream, (E + H) * G, p.w_mu, p.w_rho, p.w_prior, saved.w) +
          sample_gaussian_kl(serial_for(), p.b_stream, G, p.b_mu, p.b_rho, p.b_prior, s.b);
  } else {
    sample_gaussian(pf, p.w_stream, (E + H) * G, p.w_mu, p.w_rho, saved.w);
    sample_gaussian(serial_for(), p.b_stream, G, p.b_mu, p.b_rho, s.b);
  }
  const float* w_h = saved.w + E * G;
  // Input projection of every step, x W_x + b, written where the gates of each step will be.
  gemm(pf, GemmArgs{B * T, G, E, p.x, E, false, saved.w, G, false, saved.gates, G});
  for_rows(pf, B * T, G, [&](int64_t r) {
    float* row = saved.gates + r * G;
    for (int64_t j = 0; j < G; ++j) row[j] += s.b[j];
  });
  pack_panels(w_h, G, false, H, G, act.panel, s.packed_w_h);
  for_batch_chunks(pf, B, T * G * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < T; ++t) {
      // z += h_{t-1} W_h in place: h_{t-1} is h0 or column t-1 of h_seq (row stride T H).
      const float* h_prev = t == 0 ? p.h0 + b0 * H : h_seq + (b0 * T + t - 1) * H;
      act.recurrent_product(h_prev, t == 0 ? H : T * H, b1 - b0, s.packed_w_h, H, G, saved.gates + (b0 * T + t) * G,
                            T * G, true);
      for (int64_t b = b0; b < b1; ++b) {
        const float* c_prev = t == 0 ? p.c0 + b * H : saved.cells + (b * T + t - 1) * H;
        act.cell_forward(LstmCellForward{saved.gates + (b * T + t) * G, c_prev, saved.cells + (b * T + t) * H,
                                         h_seq + (b * T + t) * H},
                         H);
      }
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    const bool empty = T == 0;
    copy_floats(h_last + b * H, empty ? p.h0 + b * H : h_seq + (b * T + T - 1) * H, H);
    copy_floats(c_last + b * H, empty ? p.c0 + b * H : saved.cells + (b * T + T - 1) * H, H);
  }
}

void lstm_backward(const ParallelFor& pf, const LstmGradParams& p, const LstmBackwardScratch& s) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  const LstmKernels& act = best_lstm_kernels();
  const float* w_h = p.fwd.w + E * G;
  copy_floats(s.dh, p.dh_last, B * H);
  copy_floats(s.dc, p.dc_last, B * H);
  pack_panels(w_h, G, true, G, H, act.panel, s.packed_w_h);
  for_batch_chunks(pf, B, T * G * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t b = b0; b < b1; ++b) {
        const float* c_prev = t == 0 ? p.c0 + b * H : p.fwd.cells + (b * T + t - 1) * H;
        act.cell_backward(
            LstmCellBackward{p.fwd.gates + (b * T + t) * G, p.fwd.cells + (b * T + t) * H, c_prev,
                             p.dh_seq + (b * T + t) * H, s.dh + b * H, s.dc + b * H, s.dz + (b * T + t) * G},
            H);
      }
      // dh_{t-1} = dz_t W_h^T.
      act.recurrent_product(s.dz + (b0 * T + t) * G, T * G, b1 - b0, s.packed_w_h, G, H, s.dh + b0 * H, H, false);
    }
  });
  copy_floats(p.dh0, s.dh, B * H);
  copy_floats(p.dc0, s.dc, B * H);
  // The inputs of every step's contraction: x, and h_{t-1} (h0 at t = 0).
  if (T > 0) {
    pf(B, T * H, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        copy_floats(s.h_prev + b * T * H, p.h0 + b * H, H);
        copy_floats(s.h_prev + (b * T + 1) * H, p.fwd.h_seq + b * T * H, (T - 1) * H);
      }
    });
  }
  gemm(pf, GemmArgs{B * T, E, G, s.dz, G, false, p.fwd.w, G, true, p.dx, E});
  gemm(pf, GemmArgs{E, G, B * T, p.x, E, true, s.dz, G, false, p.dw_mu, G, false, kTile});
  gemm(pf, GemmArgs{H, G, B * T, s.h_prev, H, true, s.dz, G, false, p.dw_mu + E * G, G, false, kTile});
  // db = column sums of dz, each column summed in row order.
  constexpr int64_t kColumns = 256;
  pf(ceil_div(G, kColumns), kColumns * std::max<int64_t>(B * T, 1), [&](int64_t first, int64_t last) {
    const int64_t lo = first * kColumns, hi = std::min(G, last * kColumns);
    std::fill(p.db_mu + lo, p.db_mu + hi, 0.0f);
    for (int64_t r = 0; r < B * T; ++r) {
      const float* row = s.dz + r * G;
      for (int64_t j = lo; j < hi; ++j) p.db_mu[j] += row[j];
    }
  });
  // drho from the regenerated noise, with the KL's terms in the same pass when dkl is given.
  if (p.dkl != nullptr) {
    sample_gaussian_grad_kl(pf, p.w_stream, (E + H) * G, p.dw_mu, p.w_mu, p.w_rho, p.w_prior, *p.dkl, p.dw_mu,
                            p.dw_rho);
    sample_gaussian_grad_kl(serial_for(), p.b_stream, G, p.db_mu, p.b_mu, p.b_rho, p.b_prior, *p.dkl, p.db_mu,
                            p.db_rho);
  } else {
    sample_gaussian_grad(pf, p.w_stream, (E + H) * G, p.dw_mu, p.w_mu, p.w_rho, p.dw_rho, nullptr);
    sample_gaussian_grad(serial_for(), p.b_stream, G, p.db_mu, p.b_mu, p.b_rho, p.db_rho, nullptr);
  }
}

}  // namespace fusedbnn
