// Numerically stable softmax / log-softmax over any axis (CPU: src/backend/cpu/softmax.cpp).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);
// dL/dx from dL/dy and y = softmax(x): y * (g - sum(g*y)).
Tensor softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis);
// dL/dx from dL/dy and y = log_softmax(x): g - exp(y) * sum(g).
Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis);

}  // namespace strata::backend
