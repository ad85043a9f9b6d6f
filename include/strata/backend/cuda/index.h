// GPU index ops: the CUDA twins of strata/backend/index.h (CPU:
// src/backend/cpu/index.cpp), reached through the dispatch at the top of each
// CPU entry point. Tensors on one GPU; data of any dtype for the copying ops
// and of any dtype for the adding ops (f16/bf16 summed in f32); indices i32 or
// i64; any strided view. An out-of-range index throws after the op's kernels
// ran, naming the op, the index and the bound (the op's one host sync).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

Tensor embedding(const Tensor& weight, const Tensor& ids);
// Deterministic: each row sums its gradient rows in id-position order (no atomics).
Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_rows, int64_t padding_idx = -1);
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
// Deterministic like embedding_backward.
Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& src);
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
// Deterministic: each (outer, inner) column walks the indexed axis in order.
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src);

}  // namespace strata::backend::cuda
