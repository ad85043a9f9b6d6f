// Differentiable row movement for MoE layers: dispatch (token rows -> expert
// capacity slots), combine (slots -> weighted token rows), the expert-parallel
// all-to-all, and row replacement for the stratified pass loop. All are index
// gathers/scatters over contiguous rows (no one-hot einsums), f32 or f64.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/dist/communicator.h"
#include "strata/moe/routing.h"

namespace strata::moe {

// A slot map on a GPU, as the kernels of strata/backend/cuda/moe_rows.h read
// it: i64 row_slot [rows * k] and slot_src [slots] on one device. Made either
// from a host SlotMap (each vector uploaded on first use: a forward needs only
// one of them) or from device vectors built on the GPU (make_device_slot_map),
// with no host copy at all. The autograd closures of dispatch/combine keep it,
// so their backward reuses the device vectors.
class DeviceSlotMap {
 public:
  DeviceSlotMap(std::shared_ptr<const SlotMap> map, Device device);
  // row_slot [rows * k], slot_src [slots]: contiguous i64 on one GPU.
  DeviceSlotMap(int64_t rows, int64_t k, Tensor row_slot, Tensor slot_src);
  int64_t rows() const { return rows_; }
  int64_t k() const { return k_; }
  int64_t slots() const { return slots_; }
  Device device() const { return device_; }
  const std::shared_ptr<const SlotMap>& host_map() const { return map_; }  // null when built on the device
  Tensor row_slot();
  Tensor slot_src();

 private:
  Tensor upload(Tensor& cached, const std::vector<int64_t>& v);
  std::shared_ptr<const SlotMap> map_;
  Device device_;
  int64_t rows_ = 0, k_ = 0, slots_ = 0;
  std::mutex mu_;
  Tensor row_slot_, slot_src_;
};

// The slot map of a GPU gate's routing (make_slot_map's contract, checked
// against the host copy r of the routing), built on `device` from dr (may be
// undefined when r has no rows: an all-empty map). CUDA builds only.
std::shared_ptr<DeviceSlotMap> make_device_slot_map(const Routing& r, const DeviceRouting& dr, int64_t expert_base,
                                                    int64_t buffer_experts, int64_t capacity, Device device);

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

// dispatch_rows / combine_rows with a slot map on x's (y's) GPU.
Tensor dispatch_rows(const Tensor& x, std::shared_ptr<DeviceSlotMap> map);
Tensor combine_rows(const Tensor& y, const Tensor& weights, std::shared_ptr<DeviceSlotMap> map);

// base [N, d] with rows[i] replaced by values[i] ([rows.size(), d]); the
// gradient of the replaced rows goes to values, the rest to base.
Tensor replace_rows(const Tensor& base, const std::vector<int64_t>& rows, const Tensor& values);

}  // namespace strata::moe
