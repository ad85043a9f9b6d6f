// Reductions over one axis, cumulative sums and top-k (CPU: src/backend/cpu/reduce.cpp).
#pragma once
#include <utility>

#include "strata/core/tensor.h"

namespace strata::backend {

Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor sum_all(const Tensor& x);  // 0-d tensor; accumulates in double
// Maximum along the axis: (values, i64 indices of the first maximum).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);  // i64
// Inclusive prefix sum along the axis (floating or integer dtypes).
Tensor cumsum(const Tensor& x, int64_t axis);
// The k largest along the axis, sorted descending (ties: lower index first):
// (values, i64 indices).
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis = -1);

}  // namespace strata::backend
