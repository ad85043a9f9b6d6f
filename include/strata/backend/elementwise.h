// Element-wise ops with numpy broadcasting (CPU: src/backend/cpu/elementwise.cpp).
// Inputs may be any strided view; results are new contiguous tensors. Binary
// ops require both operands to have the same floating dtype (f32 or f64).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

enum class UnaryOp { Neg, Exp, Log, Tanh, Sigmoid, Relu, Gelu, Sqrt, Rsqrt, Abs, Square, Reciprocal };
enum class BinaryOp { Add, Sub, Mul, Div, Maximum, Minimum, Pow };
enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge };

const char* unary_name(UnaryOp op);
const char* binary_name(BinaryOp op);

Tensor unary(UnaryOp op, const Tensor& x);
// dL/dx of y = op(x), given dL/dy, x and y (each op uses whichever is cheaper).
Tensor unary_backward(UnaryOp op, const Tensor& grad_y, const Tensor& x, const Tensor& y);

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// a op s (s is a scalar on the right).
Tensor binary_scalar(BinaryOp op, const Tensor& a, double s);
// s op a (s on the left: rsub, rdiv, rpow).
Tensor scalar_binary(BinaryOp op, double s, const Tensor& a);

// 1 where the comparison holds, else 0, in the operands' dtype.
Tensor compare(CompareOp op, const Tensor& a, const Tensor& b);
Tensor compare_scalar(CompareOp op, const Tensor& a, double s);

// cond (any dtype; nonzero = true) ? a : b, broadcasting all three.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with `value` where mask (any dtype, nonzero = true; broadcast to x) is set.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// Sums a gradient of a broadcast result back to `shape` (the operand's shape).
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace strata::backend
