// In-place accumulation dst += alpha * src (same shape and dtype; any strides).
// The autograd engine uses it to sum gradients, optimizers to update state.
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

void accumulate_(const Tensor& dst, const Tensor& src, double alpha = 1.0);
// dst *= alpha
void scale_(const Tensor& dst, double alpha);

}  // namespace strata::backend
