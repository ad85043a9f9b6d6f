// GPU reductions over one axis, prefix sums and top-k (src/backend/cuda/reduce.cu),
// with the contract of strata/backend/reduce.h on any strided view on a CUDA
// device: sum/sum_all/cumsum/max/argmax/topk take f32, f64, f16, bf16, i32 and
// i64; mean the floating dtypes. Float sums accumulate in double (integers in
// int64), as on the CPU, in a fixed order (no atomics), so repeated runs agree
// bit for bit. Only for CUDA builds.
#pragma once
#include <utility>

#include "strata/core/tensor.h"

namespace strata::backend::cuda {

Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor sum_all(const Tensor& x);  // 0-d tensor on x's device
// (values, i64 indices of the first maximum; NaN ranks above every number).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor cumsum(const Tensor& x, int64_t axis);
// The k largest along the axis, sorted descending, ties by lower index.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis = -1);

}  // namespace strata::backend::cuda
