// Differentiable neural-network and indexing ops (src/autograd/ops_nn.cpp).
// Each records itself on the autograd tape when an input needs a gradient and
// is a plain backend call otherwise. Index tensors (i32/i64) get no gradient.
#pragma once
#include <cstdint>

#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata {

// Numerically stable (log-)softmax along `axis` (negative counts from the
// end). A lane that is entirely -inf gives zeros (softmax) / -inf (log_softmax).
Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);

// Layer normalisation over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta.
// gamma and beta are [D] or undefined Tensors (no scale / no shift).
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

// Inverted dropout: x * mask / (1 - p) with element i dropped iff
// stream.uniform(i) < p. Identity when !training or p == 0. The backward
// regenerates the mask from the stream instead of keeping it alive.
Tensor dropout(const Tensor& x, double p, const PhiloxStream& stream, bool training);

// Rows of weight [V, D] picked by ids [...] -> [..., D]. The gradient goes to
// weight only; rows equal to padding_idx (>= 0) get none.
Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx = -1);

// x with the entries `index` [n] along axis.
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
// out[i][j] = x[i][index[i][j]] (axis 1); index has x's rank, out has index's shape.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
// A copy of x with src (index's shape) added at the positions index gives
// along axis. Gradients flow to x and src.
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src);

}  // namespace strata
