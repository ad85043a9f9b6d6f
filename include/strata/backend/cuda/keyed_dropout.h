// GPU twin of moe::expert_dropout_mask (src/moe/experts.cpp): the keep-mask
// [V, R, F] of a dropout keyed by (source row, global expert, feature) with a
// Philox stream per buffer row, so a token's expert-dropout mask does not
// depend on where in the expert buffer it landed. Only for CUDA builds.
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// row [V*R] i64: source row of each buffer row (-1 = empty slot, mask 0);
// global [V] i64: global expert id of each buffer expert; seed/offset [V*R]
// i64: the Philox stream of each buffer row (bit patterns of the u64s).
// Element (v, r, f) = 1/(1-p) when stream(r).uniform((row*experts + global[v])*F + f) >= p, else 0.
Tensor keyed_dropout_mask(int64_t V, int64_t R, int64_t F, DType dtype, double p, int64_t experts, const Tensor& row,
                          const Tensor& global, const Tensor& seed, const Tensor& offset);

}  // namespace strata::backend::cuda
