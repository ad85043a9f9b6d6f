// GPU dropout masks (src/backend/cuda/dropout.cu): element i (row-major) is
// kept iff stream.uniform(i) >= p, from the same Philox counters as the CPU
// (strata/backend/dropout.h), so the mask is bit-identical to the CPU mask of
// the same (shape, dtype, p, stream); kept elements hold 1/(1-p) rounded to
// the dtype. f32/f64/f16/bf16. Only for CUDA builds.
#pragma once
#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// The scaled keep mask, a new contiguous tensor on `device` (a CUDA device).
Tensor dropout_mask(const Shape& shape, DType dtype, double p, const PhiloxStream& stream, Device device);

}  // namespace strata::backend::cuda
