// Indexing ops: embedding, index_select, gather, scatter_add, concat, split
// (CPU: src/backend/cpu/index.cpp). Index tensors are i32 or i64; an index out
// of range is an error naming the op, the index and the bound.
#pragma once
#include <vector>

#include "strata/core/tensor.h"

namespace strata::backend {

// weight [V, D], ids [...] -> [..., D]
Tensor embedding(const Tensor& weight, const Tensor& ids);
// Gradient of embedding w.r.t. weight: rows of grad [..., D] summed into [num_rows, D].
// Rows equal to `padding_idx` (>= 0) get no gradient.
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_rows, int64_t padding_idx = -1);

// x.index_select(axis, index[n]) -> x's shape with size n along axis.
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
// out = zeros(shape); out.index_add(axis, index, src): the backward of index_select.
Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& src);

// out[i][j] = x[i][index[i][j]] (axis 1 example); index has x's rank, out has index's shape.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
// Returns a copy of x with src added at the positions given by index along axis
// (the backward of gather when x is zeros).
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src);

Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
// Views of x along axis with the given sizes (must sum to x.size(axis)).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);

}  // namespace strata::backend
