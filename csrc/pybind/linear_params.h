// The checked LinearParams of the NumPy linear bindings, shared by linear.cc and estimators.cc.
#pragma once

#include <optional>

#include "core/linear.h"
#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {

// x [rows, in], w [out, in], optional bias [out]. Throws std::invalid_argument on bad shapes.
LinearParams linear_params(const Array& x, const Array& w_mu, const Array& w_rho, const Seed& w_seed,
                           const std::optional<Array>& b_mu, const std::optional<Array>& b_rho, const Seed& b_seed);

// Checks dy [rows, out] and allocates dx, dw_mu, dw_rho, db_mu, db_rho (the bias ones empty without a bias).
struct LinearGradArrays {
  Array dx, dw_mu, dw_rho, db_mu, db_rho;
  LinearGradArrays(const LinearParams& p, const Array& dy);
  LinearGradParams params(const LinearParams& p, const Array& dy);
  py::tuple tuple() const { return py::make_tuple(dx, dw_mu, dw_rho, db_mu, db_rho); }
};

}  // namespace pyb
}  // namespace fusedbnn
