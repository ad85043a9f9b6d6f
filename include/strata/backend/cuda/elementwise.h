// GPU element-wise ops (contract and CPU twins: strata/backend/elementwise.h).
// Inputs are any strided views on one GPU; results are new contiguous tensors
// there. unary, unary_backward, binary, binary_scalar, scalar_binary and
// sum_to_shape take f32, f64, f16 and bf16 (16-bit storage, f32 arithmetic;
// sum_to_shape accumulates in f64); compare, compare_scalar, where and
// masked_fill take every dtype, as on the CPU. Only for CUDA builds.
#pragma once
#include "strata/backend/elementwise.h"

namespace strata::backend::cuda {

Tensor unary(UnaryOp op, const Tensor& x);
Tensor unary_backward(UnaryOp op, const Tensor& grad_y, const Tensor& x, const Tensor& y);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor binary_scalar(BinaryOp op, const Tensor& a, double s);
Tensor scalar_binary(BinaryOp op, double s, const Tensor& a);
Tensor compare(CompareOp op, const Tensor& a, const Tensor& b);
Tensor compare_scalar(CompareOp op, const Tensor& a, double s);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace strata::backend::cuda
