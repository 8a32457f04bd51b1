// The one threading hook of the core: the binding supplies a parallel-for (TensorFlow's intra-op
// pool, or a plain loop in _core). Work is always cut into units whose boundaries depend on the
// problem size alone, so results are bit-identical whatever the number of threads.
#pragma once

#include <cstdint>
#include <functional>

namespace fusedbnn {

// Calls fn(first_unit, end_unit) over disjoint ranges covering [0, units); cost_per_unit is a rough
// cycle count the scheduler uses to decide how finely to split.
using ParallelFor =
    std::function<void(int64_t units, int64_t cost_per_unit, const std::function<void(int64_t, int64_t)>& fn)>;

static inline ParallelFor serial_for() {
  return [](int64_t units, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
    if (units > 0) fn(0, units);
  };
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace fusedbnn
