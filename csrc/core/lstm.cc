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

const ActivationKernels& scalar_activations();
#if defined(FUSEDBNN_HAVE_AVX2)
const ActivationKernels& avx2_activations();
#endif
#if defined(FUSEDBNN_HAVE_AVX512)
const ActivationKernels& avx512_activations();
#endif

const ActivationKernels& best_activations() {
  switch (active_isa()) {
#if defined(FUSEDBNN_HAVE_AVX512)
    case Isa::kAvx512:
      return avx512_activations();
#endif
#if defined(FUSEDBNN_HAVE_AVX2)
    case Isa::kAvx2:
      return avx2_activations();
#endif
    default:
      return scalar_activations();
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

}  // namespace

void lstm_forward(const ParallelFor& pf, const LstmParams& p, const LstmSaved& saved, const LstmForwardScratch& s,
                  float* h_seq, float* h_last, float* c_last) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  const ActivationKernels& act = best_activations();
  sample_gaussian(pf, p.w_stream, (E + H) * G, p.w_mu, p.w_rho, saved.w);
  sample_gaussian(serial_for(), p.b_stream, G, p.b_mu, p.b_rho, s.b);
  const float* w_h = saved.w + E * G;
  // Input projection of every step, x W_x + b, written where the gates of each step will be.
  gemm(pf, GemmArgs{B * T, G, E, p.x, E, false, saved.w, G, false, saved.gates, G});
  for_rows(pf, B * T, G, [&](int64_t r) {
    float* row = saved.gates + r * G;
    for (int64_t j = 0; j < G; ++j) row[j] += s.b[j];
  });
  for (int64_t t = 0; t < T; ++t) {
    // z = h_{t-1} W_h: h_{t-1} is h0 or column t-1 of h_seq (row stride T H).
    const float* h_prev = t == 0 ? p.h0 : h_seq + (t - 1) * H;
    gemm(pf, GemmArgs{B, G, H, h_prev, t == 0 ? H : T * H, false, w_h, G, false, s.z, G});
    for_rows(pf, B, G, [&](int64_t b) {
      float* gate = saved.gates + (b * T + t) * G;
      const float* z = s.z + b * G;
      for (int64_t j = 0; j < G; ++j) gate[j] += z[j];
      act.sigmoid(gate, gate, 2 * H);              // f, i
      act.tanh(gate + 2 * H, gate + 2 * H, H);     // g
      act.sigmoid(gate + 3 * H, gate + 3 * H, H);  // o
      const float* c_prev = t == 0 ? p.c0 + b * H : saved.cells + (b * T + t - 1) * H;
      float* c = saved.cells + (b * T + t) * H;
      for (int64_t j = 0; j < H; ++j) c[j] = gate[j] * c_prev[j] + gate[H + j] * gate[2 * H + j];
      float* tanh_c = s.row + b * H;
      act.tanh(c, tanh_c, H);
      float* h = h_seq + (b * T + t) * H;
      for (int64_t j = 0; j < H; ++j) h[j] = gate[3 * H + j] * tanh_c[j];
    });
  }
  for (int64_t b = 0; b < B; ++b) {
    const bool empty = T == 0;
    copy_floats(h_last + b * H, empty ? p.h0 + b * H : h_seq + (b * T + T - 1) * H, H);
    copy_floats(c_last + b * H, empty ? p.c0 + b * H : saved.cells + (b * T + T - 1) * H, H);
  }
}

void lstm_backward(const ParallelFor& pf, const LstmGradParams& p, const LstmBackwardScratch& s) {
  const int64_t B = p.batch, T = p.steps, E = p.in, H = p.hidden, G = 4 * H;
  const ActivationKernels& act = best_activations();
  const float* w_h = p.fwd.w + E * G;
  copy_floats(s.dh, p.dh_last, B * H);
  copy_floats(s.dc, p.dc_last, B * H);
  for (int64_t t = T - 1; t >= 0; --t) {
    for_rows(pf, B, G, [&](int64_t b) {
      const float* gate = p.fwd.gates + (b * T + t) * G;
      const float *f = gate, *i = gate + H, *cand = gate + 2 * H, *o = gate + 3 * H;
      const float* c = p.fwd.cells + (b * T + t) * H;
      const float* c_prev = t == 0 ? p.c0 + b * H : p.fwd.cells + (b * T + t - 1) * H;
      const float* dh_out = p.dh_seq + (b * T + t) * H;
      float* dh = s.dh + b * H;
      float* dc = s.dc + b * H;
      float* dz = s.dz + (b * T + t) * G;
      float* tanh_c = s.row + b * H;
      act.tanh(c, tanh_c, H);
      for (int64_t j = 0; j < H; ++j) {
        // Read all four gates of unit j before writing its dz (dz may alias the gates).
        const float fj = f[j], ij = i[j], gj = cand[j], oj = o[j];
        const float dh_total = dh[j] + dh_out[j];
        const float tc = tanh_c[j];
        const float dc_total = dc[j] + dh_total * oj * (1.0f - tc * tc);
        dz[j] = dc_total * c_prev[j] * fj * (1.0f - fj);
        dz[H + j] = dc_total * gj * ij * (1.0f - ij);
        dz[2 * H + j] = dc_total * ij * (1.0f - gj * gj);
        dz[3 * H + j] = dh_total * tc * oj * (1.0f - oj);
        dc[j] = dc_total * fj;
      }
    });
    // dh_{t-1} = dz_t W_h^T.
    gemm(pf, GemmArgs{B, H, G, s.dz + t * G, T * G, false, w_h, G, true, s.dh, H});
  }
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
  // The weight gradients contract over all B T rows: tiles of 256 columns pack x and h_prev 4 times
  // instead of 16 (17.5 instead of 21.5 ms with AVX2 at the benchmark's shape, benchmarks/NOTES.md).
  constexpr int64_t kWeightGradTile = 256;
  gemm(pf, GemmArgs{E, G, B * T, p.x, E, true, s.dz, G, false, p.dw_mu, G, false, kWeightGradTile});
  gemm(pf, GemmArgs{H, G, B * T, s.h_prev, H, true, s.dz, G, false, p.dw_mu + E * G, G, false, kWeightGradTile});
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
  sample_gaussian_grad(pf, p.w_stream, (E + H) * G, p.dw_mu, p.w_mu, p.w_rho, p.dw_rho, nullptr);
  sample_gaussian_grad(serial_for(), p.b_stream, G, p.db_mu, p.b_mu, p.b_rho, p.db_rho, nullptr);
}

}  // namespace fusedbnn
