// Included by gemm_{scalar,avx2,avx512}.cc, each of which first renames the Eigen namespace so that
// the three instruction-set builds of Eigen's templates never merge at link time.
#pragma once

#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>

#include "gemm.h"

namespace fusedbnn {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using MutMap = Eigen::Map<RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;

void gemm_tile(const GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t rows = m1 - m0, cols = n1 - n0;
  MutMap c(g.c + m0 * g.ldc + n0, rows, cols, Eigen::OuterStride<>(g.ldc));
  if (g.k == 0) {
    if (!g.accumulate) c.setZero();
    return;
  }
  // A tile: rows m0..m1 of op(A); B tile: columns n0..n1 of op(B).
  const ConstMap a = g.trans_a ? ConstMap(g.a + m0, g.k, rows, Eigen::OuterStride<>(g.lda))
                               : ConstMap(g.a + m0 * g.lda, rows, g.k, Eigen::OuterStride<>(g.lda));
  const ConstMap b = g.trans_b ? ConstMap(g.b + n0 * g.ldb, cols, g.k, Eigen::OuterStride<>(g.ldb))
                               : ConstMap(g.b + n0, g.k, cols, Eigen::OuterStride<>(g.ldb));
  const auto product = [&](const auto& lhs, const auto& rhs) {
    if (g.accumulate) {
      c.noalias() += lhs * rhs;
    } else {
      c.noalias() = lhs * rhs;
    }
  };
  if (g.trans_a && g.trans_b) {
    product(a.transpose(), b.transpose());
  } else if (g.trans_a) {
    product(a.transpose(), b);
  } else if (g.trans_b) {
    product(a, b.transpose());
  } else {
    product(a, b);
  }
}

}  // namespace
}  // namespace fusedbnn
