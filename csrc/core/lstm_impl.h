// The LSTM's per-step kernels (activations, cell passes, the recurrent product), written once over
// a lane traits type T (simd.h) and compiled once per instruction set by lstm_{scalar,avx2,avx512}.cc.
#pragma once

#include <algorithm>

#include "lstm.h"
#include "simd.h"

namespace fusedbnn {
namespace simd {

template <class T>
struct ActivationMath : T, PolyMath<T> {};
template <>
struct ActivationMath<ScalarExact> : ScalarExact {};

template <class T>
struct LstmKernelsImpl {
  using M = ActivationMath<T>;
  using F = typename T::F;
  static constexpr int L = T::kLanes;

  // tanh(x) = 2 sigmoid(2x) - 1: absolute error about 1e-7, as good as the sigmoid's.
  static F tanh_lanes(F x) { return M::sub(M::mul(M::set1(2.0f), M::sigmoid(M::add(x, x))), M::set1(1.0f)); }

  template <class Fn>
  static void map(const float* in, float* out, int64_t n, Fn fn) {
    int64_t i = 0;
    for (; i + L <= n; i += L) M::store(out + i, fn(M::load(in + i)));
    if (i >= n) return;  // ">=", not "==": GCC 13 warned (-Warray-bounds) of a one-lane tail it did not rule out
    // The tail through a padded block, with the same arithmetic as full blocks.
    alignas(64) float block[L] = {};
    std::copy(in + i, in + n, block);
    M::store(block, fn(M::load(block)));
    std::copy(block, block + (n - i), out + i);
  }

  static void sigmoid(const float* in, float* out, int64_t n) {
    map(in, out, n, [](F x) { return M::sigmoid(x); });
  }
  static void tanh(const float* in, float* out, int64_t n) { map(in, out, n, tanh_lanes); }

  // L hidden units of one row; gate q of the units at gate + q * stride (the row's or a padded copy).
  static void cell_forward_lanes(float* gate, int64_t stride, const float* c_prev, float* c, float* h) {
    const F f = M::sigmoid(M::load(gate)), i = M::sigmoid(M::load(gate + stride));
    const F g = tanh_lanes(M::load(gate + 2 * stride)), o = M::sigmoid(M::load(gate + 3 * stride));
    const F cell = M::add(M::mul(f, M::load(c_prev)), M::mul(i, g));
    M::store(gate, f);
    M::store(gate + stride, i);
    M::store(gate + 2 * stride, g);
    M::store(gate + 3 * stride, o);
    M::store(c, cell);
    M::store(h, M::mul(o, tanh_lanes(cell)));
  }

  static void cell_forward(const LstmCellForward& r, int64_t n) {
    int64_t j = 0;
    for (; j + L <= n; j += L) cell_forward_lanes(r.gates + j, n, r.c_prev + j, r.c + j, r.h + j);
    if (j >= n) return;
    alignas(64) float gate[4 * L] = {}, c_prev[L] = {}, c[L], h[L];
    for (int q = 0; q < 4; ++q) std::copy(r.gates + q * n + j, r.gates + (q + 1) * n, gate + q * L);
    std::copy(r.c_prev + j, r.c_prev + n, c_prev);
    cell_forward_lanes(gate, L, c_prev, c, h);
    for (int q = 0; q < 4; ++q) std::copy(gate + q * L, gate + q * L + (n - j), r.gates + q * n + j);
    std::copy(c, c + (n - j), r.c + j);
    std::copy(h, h + (n - j), r.h + j);
  }

  // L hidden units backwards. All four gates are loaded before dz is stored: dz may alias them.
  static void cell_backward_lanes(const float* gate, int64_t stride, const float* c, const float* c_prev,
                                  const float* dh_seq, const float* dh, float* dc, float* dz) {
    const F one = M::set1(1.0f);
    const F f = M::load(gate), i = M::load(gate + stride), g = M::load(gate + 2 * stride);
    const F o = M::load(gate + 3 * stride);
    const F dh_total = M::add(M::load(dh), M::load(dh_seq));
    const F tc = tanh_lanes(M::load(c));
    const F dc_total = M::add(M::load(dc), M::mul(M::mul(dh_total, o), M::sub(one, M::mul(tc, tc))));
    M::store(dz, M::mul(M::mul(M::mul(dc_total, M::load(c_prev)), f), M::sub(one, f)));
    M::store(dz + stride, M::mul(M::mul(M::mul(dc_total, g), i), M::sub(one, i)));
    M::store(dz + 2 * stride, M::mul(M::mul(dc_total, i), M::sub(one, M::mul(g, g))));
    M::store(dz + 3 * stride, M::mul(M::mul(M::mul(dh_total, tc), o), M::sub(one, o)));
    M::store(dc, M::mul(dc_total, f));
  }

  static void cell_backward(const LstmCellBackward& r, int64_t n) {
    int64_t j = 0;
    for (; j + L <= n; j += L) {
      cell_backward_lanes(r.gates + j, n, r.c + j, r.c_prev + j, r.dh_seq + j, r.dh + j, r.dc + j, r.dz + j);
    }
    if (j >= n) return;
    alignas(64) float gate[4 * L] = {}, c[L] = {}, c_prev[L] = {}, dh_seq[L] = {}, dh[L] = {}, dc[L] = {}, dz[4 * L];
    for (int q = 0; q < 4; ++q) std::copy(r.gates + q * n + j, r.gates + (q + 1) * n, gate + q * L);
    const float* rows[] = {r.c, r.c_prev, r.dh_seq, r.dh, r.dc};
    float* blocks[] = {c, c_prev, dh_seq, dh, dc};
    for (int k = 0; k < 5; ++k) std::copy(rows[k] + j, rows[k] + n, blocks[k]);
    cell_backward_lanes(gate, L, c, c_prev, dh_seq, dh, dc, dz);
    for (int q = 0; q < 4; ++q) std::copy(dz + q * L, dz + q * L + (n - j), r.dz + q * n + j);
    std::copy(dc, dc + (n - j), r.dc + j);
  }

  // The recurrent product on op(W) packed by pack_panels (lstm.cc) in panels of kPanel columns:
  // blocks of up to kRows rows x one panel, 2 kRows accumulators (12 of AVX2's 16 registers), the
  // sum over k in order (so each row's result depends on nothing but its own inputs).
  static constexpr int kPanel = 2 * L;
  static constexpr int kRows = 6;

  template <int R>
  static void product_block(const float* a, int64_t lda, const float* panel, int64_t k, float* c, int64_t ldc,
                            int64_t width, bool accumulate) {
    F lo[R], hi[R];
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = M::set1(0.0f);
    for (int64_t kk = 0; kk < k; ++kk) {
      const F b_lo = M::load(panel + kk * kPanel), b_hi = M::load(panel + kk * kPanel + L);
      for (int r = 0; r < R; ++r) {
        const F x = M::set1(a[r * lda + kk]);
        lo[r] = M::fma(x, b_lo, lo[r]);
        hi[r] = M::fma(x, b_hi, hi[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(64) float sum[kPanel];
      M::store(sum, lo[r]);
      M::store(sum + L, hi[r]);
      float* row = c + r * ldc;
      for (int64_t j = 0; j < width; ++j) row[j] = accumulate ? row[j] + sum[j] : sum[j];
    }
  }

  // The last rows (fewer than kRows) as one block of exactly that many.
  template <int R>
  static void product_rows(int64_t rows, const float* a, int64_t lda, const float* panel, int64_t k, float* c,
                           int64_t ldc, int64_t width, bool accumulate) {
    if constexpr (R > 0) {
      if (rows == R) return product_block<R>(a, lda, panel, k, c, ldc, width, accumulate);
      product_rows<R - 1>(rows, a, lda, panel, k, c, ldc, width, accumulate);
    }
  }

  static void recurrent_product(const float* a, int64_t lda, int64_t rows, const float* packed, int64_t k, int64_t n,
                                float* c, int64_t ldc, bool accumulate) {
    for (int64_t p0 = 0; p0 < n; p0 += kPanel) {
      const float* panel = packed + p0 * k;
      const int64_t width = std::min<int64_t>(kPanel, n - p0);
      int64_t r = 0;
      for (; r + kRows <= rows; r += kRows) {
        product_block<kRows>(a + r * lda, lda, panel, k, c + r * ldc + p0, ldc, width, accumulate);
      }
      product_rows<kRows - 1>(rows - r, a + r * lda, lda, panel, k, c + r * ldc + p0, ldc, width, accumulate);
    }
  }

  static LstmKernels table() {
    return LstmKernels{&sigmoid, &tanh, &cell_forward, &cell_backward, kPanel, &recurrent_product};
  }
};

}  // namespace simd
}  // namespace fusedbnn
