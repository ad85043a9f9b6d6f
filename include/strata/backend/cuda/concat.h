// GPU concat: the CUDA twin of strata::backend::concat (CPU:
// src/backend/cpu/concat.cpp). split needs no GPU code: it only makes views,
// and the CPU entry point works unchanged on GPU tensors.
#pragma once
#include <vector>

#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// Inputs on one GPU, any dtype and strides; the result is a new contiguous tensor there.
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);

}  // namespace strata::backend::cuda
