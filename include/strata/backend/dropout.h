// Dropout with masks from a Philox stream: element i (row-major over x's
// shape) is kept iff stream.uniform(i) >= p, so a GPU kernel with the same
// stream drops the same elements (CPU: src/backend/cpu/dropout.cpp).
#pragma once
#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata::backend {

// The scaled keep mask: 1/(1-p) where kept, 0 where dropped; shape and dtype of the request.
Tensor dropout_mask(const Shape& shape, DType dtype, double p, const PhiloxStream& stream,
                    Device device = Device::cpu());

}  // namespace strata::backend
