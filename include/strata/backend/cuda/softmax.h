// GPU softmax / log-softmax over any axis (src/backend/cuda/softmax.cu), with
// the contract of strata/backend/softmax.h; f32, f64, f16 and bf16 tensors on
// a CUDA device (16-bit values are computed with f32 statistics). Only for
// CUDA builds (STRATA_WITH_CUDA).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);
// dL/dx from dL/dy and y = softmax(x): y * (g - sum(g*y)).
Tensor softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis);
// dL/dx from dL/dy and y = log_softmax(x): g - exp(y) * sum(g).
Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis);

}  // namespace strata::backend::cuda
