// GPU row movement of the MoE layer (CPU: the host loops in src/moe/dispatch.cpp,
// which call these when their tensors are on a GPU). The slot map lives on the
// device as two i64 vectors built from moe::SlotMap (strata/moe/routing.h):
//   row_slot [rows * k]: slot of choice j of row r, -1 = not dispatched
//   slot_src [slots]:    r * k + j that fills the slot, -1 = empty slot
// Row tensors are [rows, d] on one GPU, any strides, f32/f64/f16/bf16 (16-bit
// types computed in f32); results are new contiguous tensors. Every output
// element has one writer and sums in a fixed order: bit-reproducible.
// Entries outside the tensors' row ranges count as -1 (kernels never read
// outside a tensor; make_slot_map never produces them).
#pragma once
#include <cstdint>
#include <utility>

#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// x [rows, d] -> [slots, d]: slot s = x[slot_src[s] / k], empty slots zero.
Tensor gather_to_slots(const Tensor& x, const Tensor& slot_src, int64_t k);

// g [slots, d] -> [rows, d]: row r = sum over j = 0..k-1 of g[row_slot[r*k + j]]
// (dispatched choices only, in j order). The backward of gather_to_slots.
Tensor sum_slots_to_rows(const Tensor& g, const Tensor& row_slot, int64_t k);

// y [slots, d], weights [rows, k] (y's dtype) -> [rows, d]:
// row r = sum over j of weights[r, j] * y[row_slot[r*k + j]], in j order.
Tensor combine_slots(const Tensor& y, const Tensor& weights, const Tensor& row_slot);

// The gradients of combine_slots for grad [rows, d]: first dy [slots, d] with
// dy[s] = weights[src] * grad[src / k] (src = slot_src[s]; zero for empty
// slots), second dweights [rows, k] with dweights[r, j] = <grad[r], y[slot]>
// (zero for undispatched choices), reduced by one warp per (r, j).
std::pair<Tensor, Tensor> combine_slots_backward(const Tensor& grad, const Tensor& y, const Tensor& weights,
                                                 const Tensor& row_slot, const Tensor& slot_src);

// base [N, d] with row rows[i] replaced by values[i] ([rows.numel(), d]).
// rows: i64 [n] on the device, distinct and inside [0, N) (the caller checks).
Tensor replace_rows(const Tensor& base, const Tensor& rows, const Tensor& values);

// The gradients of replace_rows for grad [N, d]: first grad with the replaced
// rows zeroed, second the replaced rows of grad [n, d].
std::pair<Tensor, Tensor> replace_rows_backward(const Tensor& grad, const Tensor& rows);

}  // namespace strata::backend::cuda
