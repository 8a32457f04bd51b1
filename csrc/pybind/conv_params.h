// The sizes and options of a 2-D convolution as ConvParams, shared by the NumPy (conv.cc) and the
// device-pointer (cuda/conv.cc) bindings of fusedbnn._core.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/conv.h"
#include "pybind/common.h"

namespace fusedbnn {
namespace pyb {

using Pair = std::pair<int64_t, int64_t>;

// ConvParams with every size and option set and every pointer null: x_shape in data_format's layout
// (NHWC or NCHW), w_shape [kh, kw, in/groups, out]; padding VALID, SAME or EXPLICIT with
// explicit_paddings [top, bottom, left, right]. Throws std::invalid_argument on bad arguments.
ConvParams conv_shape_params(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                             const Pair& stride, const std::string& padding,
                             const std::vector<int64_t>& explicit_paddings, const Pair& dilation, int64_t groups,
                             const std::string& data_format);

// y's shape in x's layout.
std::vector<py::ssize_t> conv_output_shape(const ConvParams& p);

}  // namespace pyb
}  // namespace fusedbnn
