// Differentiable element-wise math, reductions, selection and concat/split
// (src/autograd/ops_math.cpp). Binary ops broadcast numpy-style and need both
// operands in the same floating dtype (f32 or f64); their gradients are summed
// back to each operand's shape. Comparisons, argmax and index outputs carry no
// gradient. Where a function has a kink (relu, abs, maximum/minimum at ties,
// max), the gradient at the kink follows PyTorch: relu'(0) = 0, abs'(0) = 0,
// ties of maximum/minimum split the gradient evenly, max routes it to the
// first maximum.
#pragma once
#include <utility>
#include <vector>

#include "strata/core/tensor.h"

namespace strata {

// ---------------------------------------------------------------- binary (broadcasting)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
// a^b; the gradient w.r.t. b is taken as 0 where a == 0.
Tensor pow(const Tensor& a, const Tensor& b);

// ---------------------------------------------------------------- with a scalar
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor sub(double s, const Tensor& a);  // s - a
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor div(double s, const Tensor& a);  // s / a
Tensor pow(const Tensor& a, double p);  // a^p
Tensor pow(double s, const Tensor& a);  // s^a
Tensor maximum(const Tensor& a, double s);
Tensor minimum(const Tensor& a, double s);
// min(max(x, lo), hi); the gradient passes where lo <= x <= hi (as in PyTorch).
Tensor clamp(const Tensor& x, double lo, double hi);
inline Tensor add_scalar(const Tensor& a, double s) { return add(a, s); }
inline Tensor sub_scalar(const Tensor& a, double s) { return sub(a, s); }
inline Tensor mul_scalar(const Tensor& a, double s) { return mul(a, s); }
inline Tensor div_scalar(const Tensor& a, double s) { return div(a, s); }

// ---------------------------------------------------------------- unary
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact: 0.5 x (1 + erf(x / sqrt 2))
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor reciprocal(const Tensor& x);

// ---------------------------------------------------------------- operators
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(const Tensor& a, double s);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(const Tensor& a, double s);
Tensor operator/(double s, const Tensor& a);

// ---------------------------------------------------------------- comparisons (no gradient)
// 1 where the relation holds, else 0, in the operands' dtype (any dtype; both the same).
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double s);
Tensor ne(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
Tensor le(const Tensor& a, double s);
Tensor gt(const Tensor& a, double s);
Tensor ge(const Tensor& a, double s);

// ---------------------------------------------------------------- selection
// cond (any dtype, nonzero = true) ? a : b, all three broadcast; gradients flow to a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with `value` where mask (broadcast to x) is nonzero; no gradient through filled places.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---------------------------------------------------------------- reductions
Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor sum(const Tensor& x);  // all elements, 0-d
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x);  // all elements, 0-d
// Maximum values along the axis; the gradient goes to the first maximum.
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);  // i64, no gradient
// Inclusive prefix sum (integer dtypes too); the gradient is the reverse prefix sum.
Tensor cumsum(const Tensor& x, int64_t axis);
// (values, i64 indices) of the k largest along the axis, sorted descending,
// ties by lower index; values are differentiable.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis = -1);

// ---------------------------------------------------------------- concat / split
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
// Pieces of x along axis with the given sizes (summing to x.size(axis)); each
// is a view of x and differentiable on its own.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);
// n equal pieces along axis (x.size(axis) must be divisible by n).
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t axis);

}  // namespace strata
