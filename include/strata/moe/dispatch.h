// Differentiable row movement for MoE layers: dispatch (token rows -> expert
// capacity slots), combine (slots -> weighted token rows), the expert-parallel
// all-to-all, and row replacement for the stratified pass loop. All are index
// gathers/scatters over contiguous rows (no one-hot einsums), f32 or f64.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/dist/communicator.h"
#include "strata/moe/routing.h"

namespace strata::moe {

// x [rows, d] -> buffer [map.slots, d]: slot s holds row src/k of its choice,
// empty slots are zero. The gradient sums each row's slots.
Tensor dispatch_rows(const Tensor& x, std::shared_ptr<const SlotMap> map);

// y [map.slots, d], weights [rows, k] -> [rows, d]: row r = sum_j w[r,j] * y[slot(r,j)]
// over its dispatched choices. Gradients flow to y and to the weights.
Tensor combine_rows(const Tensor& y, const Tensor& weights, std::shared_ptr<const SlotMap> map);

// Exchanges expert buffers: x [size * chunk, ...] (rows for rank r at
// [r*chunk, (r+1)*chunk)) -> rank r's chunks in rank order. Its own adjoint,
// so the backward runs the same exchange on the gradient.
Tensor all_to_all_rows(const Tensor& x, dist::Communicator& comm);

// base [N, d] with rows[i] replaced by values[i] ([rows.size(), d]); the
// gradient of the replaced rows goes to values, the rest to base.
Tensor replace_rows(const Tensor& base, const std::vector<int64_t>& rows, const Tensor& values);

}  // namespace strata::moe
