// The max_norm rescale of the embedding lookup, element by element, shared by the CPU kernel
// (embedding.cc) and the CUDA kernels (embedding.cu) so that both compute the same numbers. With
// n = |e|_p > max_norm the output row is e * s, s = max_norm / n; its gradient for g is
// s g - s (g . e) / n * dn/de, dn/de_j = sign(e_j) (|e_j| / n)^(p-1). Norms are accumulated in double.
#pragma once

#include <math.h>

#include "noise.h"

namespace fusedbnn {

// e's share of the p-norm accumulator: |e|^p (e*e and |e| written out for p = 2 and 1).
FUSEDBNN_HD double norm_term(float e, double p) {
  const double x = fabs(static_cast<double>(e));
  if (p == 2.0) return x * x;
  if (p == 1.0) return x;
  return pow(x, p);
}

// The p-norm from the sum of the norm_terms of a row.
FUSEDBNN_HD double norm_from_terms(double terms, double p) {
  if (p == 2.0) return sqrt(terms);
  if (p == 1.0) return terms;
  return pow(terms, 1.0 / p);
}

// dn/de of n = |e|_p, at one element e of a row with norm n.
FUSEDBNN_HD double norm_derivative(float e, double norm, double p) {
  if (p == 2.0) return e / norm;
  if (p == 1.0) return (e > 0.0f) - (e < 0.0f);
  return copysign(pow(fabs(static_cast<double>(e)) / norm, p - 1.0), static_cast<double>(e));
}

// One element of the gradient through the rescale of a row with norm > max_norm:
// scale = max_norm / norm, pull = scale * (g . e) / norm.
FUSEDBNN_HD float rescaled_grad(float g, float e, double scale, double pull, double norm, double p) {
  return static_cast<float>(scale * g - pull * norm_derivative(e, norm, p));
}

}  // namespace fusedbnn
