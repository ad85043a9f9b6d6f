// Differentiable views and casts. Each shares storage with its input like the
// raw Tensor member of the same name, and records how to route the gradient
// back (reshape -> reshape, transpose -> transpose, slice -> scatter into
// zeros, expand -> sum over the broadcast dims).
#pragma once
#include <vector>

#include "strata/core/tensor.h"

namespace strata {

Tensor reshape(const Tensor& x, const Shape& shape);
Tensor view(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);
// Cast to another floating dtype; the gradient is cast back to x's dtype.
Tensor cast(const Tensor& x, DType dtype);

}  // namespace strata
