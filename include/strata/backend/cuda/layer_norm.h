// GPU fused layer normalisation over the last axis (src/backend/cuda/layer_norm.cu),
// with the contract of strata/backend/layer_norm.h on f32/f64/f16/bf16 tensors
// on a CUDA device. The saved mean/rstd have x's dtype for f32/f64 inputs (as
// on the CPU) and are f32 for f16/bf16 inputs: a 16-bit rstd would carry only
// 8-11 bits into the backward. dgamma/dbeta are reduced without atomics, so
// repeated runs give bit-identical results. Only for CUDA builds.
#pragma once
#include "strata/backend/layer_norm.h"

namespace strata::backend::cuda {

LayerNormForward layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);
LayerNormBackward layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                      const LayerNormForward& fwd);

}  // namespace strata::backend::cuda
