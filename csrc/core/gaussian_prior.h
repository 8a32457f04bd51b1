// The Gaussian prior N(mean, std^2) of the KL kernels, CPU and CUDA alike.
#pragma once

#include <cstdint>

namespace fusedbnn {

// One prior mean for every element (MOPED-free priors), or one per element (MOPED's trained
// weights): `mean` points at one float, or at per-element means addressed like mu. On a GPU
// `mean` is a device pointer; `std` is always a host value.
struct GaussianPrior {
  const float* mean;
  bool per_element;
  float std;

  // The prior of the elements from flat index `offset` on.
  GaussianPrior from(int64_t offset) const { return {per_element ? mean + offset : mean, per_element, std}; }
};

}  // namespace fusedbnn
