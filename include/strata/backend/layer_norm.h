// Fused layer normalisation over the last axis (CPU: src/backend/cpu/layer_norm.cpp).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

struct LayerNormForward {
  Tensor y;     // same shape as x
  Tensor mean;  // [rows] (rows = numel / last dim), f32 for f32 inputs
  Tensor rstd;  // [rows] 1/sqrt(var + eps), biased variance
};
struct LayerNormBackward {
  Tensor dx, dgamma, dbeta;
};

// gamma/beta: [D] or undefined (no affine).
LayerNormForward layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);
LayerNormBackward layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                      const LayerNormForward& fwd);

}  // namespace strata::backend
