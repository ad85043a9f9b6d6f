// GPU in-place accumulation (CPU twin and contract: strata/backend/accumulate.h).
// f32, f64, f16 and bf16 (16-bit storage, f32 arithmetic). Only for CUDA builds.
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// dst += alpha * src; same shape and dtype, same GPU, any strides. dst must
// not overlap itself (no stride-0 dims of size > 1).
void accumulate_(const Tensor& dst, const Tensor& src, double alpha = 1.0);
// dst *= alpha (any view of a GPU tensor).
void scale_(const Tensor& dst, double alpha);

}  // namespace strata::backend::cuda
