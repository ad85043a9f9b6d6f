// GPU kernels behind Tensor::copy_ and Tensor::fill_ (src/core/tensor.cpp):
// an element-wise copy between two views on the same GPU with any strides
// and any dtype pair, and a fill of any view. Both are queued on the compute
// stream and return without waiting. Plain C++ declarations, so the core
// (compiled by the host compiler) can call them. Only for CUDA builds.
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// dst[i] = cast(src[i]) for views of the same shape on the same GPU. The cast
// is the CPU one (f16/bf16 widen to f32; narrowing rounds to nearest even;
// float -> integer truncates). dst must not overlap itself (no stride-0 dims
// of size > 1); src may be any view, including a broadcast one.
void copy_(const Tensor& dst, const Tensor& src);

// Every element of the view dst set to value, converted as on the CPU.
void fill_(const Tensor& dst, double value);

}  // namespace strata::backend::cuda
