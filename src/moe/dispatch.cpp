// Row gathers/scatters of the MoE layer. Each op parallelises over the rows
// it writes, so no two threads add into the same row: dispatch's backward
// walks token rows (each sums its own <= k slots), combine's backward walks
// slots (each slot belongs to exactly one token choice).
//
// Tensors on a GPU take the kernels of strata/backend/cuda/moe_rows.h, which
// follow the same one-writer-per-element rule; they read a DeviceSlotMap,
// either uploaded once per host map or built on the GPU from a GPU gate's
// routing (make_device_slot_map), and the autograd closures keep it for the
// backward.
#include "strata/moe/dispatch.h"

#include <cstring>

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/moe_rows.h"
#include "strata/backend/cuda/routing.h"
#include "strata/backend/device_dispatch.h"
#endif

#include "strata/autograd/node.h"
#include "strata/core/dispatch.h"
#include "strata/core/strided.h"
#include "strata/moe/profile.h"

namespace strata::moe {

using autograd::record;

namespace {

// Adds the time since `start` to a profile counter when profiling is on.
struct Timed {
  double* counter;
  double start;
  explicit Timed(double* c) : counter(profile().enabled ? c : nullptr), start(counter ? profile_clock() : 0) {}
  ~Timed() {
    if (counter) *counter += profile_clock() - start;
  }
};

void check_rows(const Tensor& t, const char* op, const char* what) {
#ifndef STRATA_WITH_CUDA
  STRATA_CHECK(t.device().is_cpu()) << op << ": " << what << " " << t.str() << " needs the CUDA backend";
#endif
  STRATA_CHECK(t.dim() == 2) << op << ": " << what << " must be [rows, dim], got " << t.str();
}

#ifdef STRATA_WITH_CUDA
// The device copy of `map` on `device`. The last one made is remembered by a
// weak reference: dispatch and combine of one layer share it while the
// dispatch's autograd closure (or any other holder) keeps it alive. It holds
// its map, so a live entry's map address cannot be reused by another map.
std::shared_ptr<DeviceSlotMap> device_slot_map(const std::shared_ptr<const SlotMap>& map, Device device) {
  static std::mutex mu;
  static std::weak_ptr<DeviceSlotMap> last;
  std::lock_guard<std::mutex> lock(mu);
  std::shared_ptr<DeviceSlotMap> dm = last.lock();
  if (dm && dm->host_map() == map && dm->device() == device) return dm;
  dm = std::make_shared<DeviceSlotMap>(map, device);
  last = dm;
  return dm;
}

Tensor dispatch_on_device(const Tensor& x, std::shared_ptr<DeviceSlotMap> dm) {
  Tensor y = backend::cuda::gather_to_slots(x.detach(), dm->slot_src(), dm->k());
  return record("moe_dispatch", y, {x}, [dm](const Tensor& g) -> std::vector<Tensor> {
    Timed tb(&profile().dispatch_bwd);
    return {backend::cuda::sum_slots_to_rows(g, dm->row_slot(), dm->k())};
  });
}

Tensor combine_on_device(const Tensor& y, const Tensor& weights, std::shared_ptr<DeviceSlotMap> dm) {
  Tensor yd = y.detach(), wd = weights.detach();
  Tensor out = backend::cuda::combine_slots(yd, wd, dm->row_slot());
  return record("moe_combine", out, {y, weights}, [dm, yd, wd](const Tensor& g) -> std::vector<Tensor> {
    Timed tb(&profile().combine_bwd);
    auto grads = backend::cuda::combine_slots_backward(g, yd, wd, dm->row_slot(), dm->slot_src());
    return {grads.first, grads.second};
  });
}
#endif

void check_combine(const Tensor& y, const Tensor& weights, int64_t rows, int64_t k, int64_t slots) {
  check_rows(y, "moe combine", "expert output");
  check_rows(weights, "moe combine", "weights");
  STRATA_CHECK(y.size(0) == slots) << "moe combine: expert output " << y.str() << " for " << slots << " slots";
  STRATA_CHECK(weights.size(0) == rows && weights.size(1) == k)
      << "moe combine: weights " << weights.str() << " for " << rows << " rows x " << k << " choices";
  STRATA_CHECK(weights.dtype() == y.dtype()) << "moe combine: weights " << weights.str() << " and expert output "
                                              << y.str() << " differ in dtype";
}

// out[s] = x[src(s) / k] for every filled slot (x contiguous [rows, d]).
Tensor gather_to_slots(const Tensor& x, const SlotMap& m) {
  const int64_t d = x.size(1);
  Tensor out = Tensor::zeros({m.slots, d}, x.dtype());
  dispatch_float(x.dtype(), "moe dispatch", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* op = out.data<T>();
#pragma omp parallel for schedule(static) if (m.slots * d >= kParallelGrain)
    for (int64_t s = 0; s < m.slots; ++s) {
      const int64_t src = m.slot_src[size_t(s)];
      if (src >= 0) std::memcpy(op + s * d, xp + (src / m.k) * d, size_t(d) * sizeof(T));
    }
  });
  return out;
}

// dx[r] = sum_j g[slot(r, j)] (g contiguous [slots, d]).
Tensor sum_slots_to_rows(const Tensor& g, const SlotMap& m) {
  const int64_t d = g.size(1);
  Tensor dx = Tensor::zeros({m.rows, d}, g.dtype());
  dispatch_float(g.dtype(), "moe dispatch backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = g.data<T>();
    T* dp = dx.data<T>();
#pragma omp parallel for schedule(static) if (m.rows * d >= kParallelGrain)
    for (int64_t r = 0; r < m.rows; ++r) {
      T* row = dp + r * d;
      for (int64_t j = 0; j < m.k; ++j) {
        const int64_t s = m.row_slot[size_t(r * m.k + j)];
        if (s < 0) continue;
        const T* src = gp + s * d;
        for (int64_t c = 0; c < d; ++c) row[c] += src[c];
      }
    }
  });
  return dx;
}

}  // namespace

Tensor dispatch_rows(const Tensor& x, std::shared_ptr<const SlotMap> map) {
  check_rows(x, "moe dispatch", "input");
  STRATA_CHECK(x.size(0) == map->rows) << "moe dispatch: input " << x.str() << " for a slot map of " << map->rows
                                        << " rows";
  Timed t(&profile().dispatch_fwd);
#ifdef STRATA_WITH_CUDA
  if (backend::on_cuda("moe dispatch", {x})) return dispatch_on_device(x, device_slot_map(map, x.device()));
#endif
  Tensor xc = x.detach().contiguous();
  Tensor y = gather_to_slots(xc, *map);
  return record("moe_dispatch", y, {x}, [map](const Tensor& g) -> std::vector<Tensor> {
    Timed tb(&profile().dispatch_bwd);
    return {sum_slots_to_rows(g.contiguous(), *map)};
  });
}

Tensor combine_rows(const Tensor& y, const Tensor& weights, std::shared_ptr<const SlotMap> map) {
  check_combine(y, weights, map->rows, map->k, map->slots);
  Timed t(&profile().combine_fwd);
#ifdef STRATA_WITH_CUDA
  if (backend::on_cuda("moe combine", {y, weights})) return combine_on_device(y, weights, device_slot_map(map, y.device()));
#endif
  Tensor yc = y.detach().contiguous(), wc = weights.detach().contiguous();
  const int64_t d = y.size(1), rows = map->rows, k = map->k;
  Tensor out = Tensor::zeros({rows, d}, y.dtype());
  dispatch_float(y.dtype(), "moe combine", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* yp = yc.data<T>();
    const T* wp = wc.data<T>();
    T* op = out.data<T>();
#pragma omp parallel for schedule(static) if (rows * d >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      T* o = op + r * d;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t s = map->row_slot[size_t(r * k + j)];
        if (s < 0) continue;
        const T w = wp[r * k + j];
        const T* src = yp + s * d;
        for (int64_t c = 0; c < d; ++c) o[c] += w * src[c];
      }
    }
  });
  return record("moe_combine", out, {y, weights}, [map, yc, wc](const Tensor& gin) -> std::vector<Tensor> {
    Timed tb(&profile().combine_bwd);
    Tensor g = gin.contiguous();
    const int64_t d = yc.size(1), rows = map->rows, k = map->k;
    Tensor dy = Tensor::zeros(yc.shape(), yc.dtype());
    Tensor dw = Tensor::zeros(wc.shape(), wc.dtype());
    dispatch_float(yc.dtype(), "moe combine backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* gp = g.data<T>();
      const T* yp = yc.data<T>();
      const T* wp = wc.data<T>();
      T* dyp = dy.data<T>();
      T* dwp = dw.data<T>();
      const int64_t slots = map->slots;
#pragma omp parallel for schedule(static) if (slots * d >= kParallelGrain)
      for (int64_t s = 0; s < slots; ++s) {
        const int64_t src = map->slot_src[size_t(s)];
        if (src < 0) continue;
        const T w = wp[src];
        const T* gr = gp + (src / k) * d;
        T* o = dyp + s * d;
        for (int64_t c = 0; c < d; ++c) o[c] = w * gr[c];
      }
#pragma omp parallel for schedule(static) if (rows * d >= kParallelGrain)
      for (int64_t r = 0; r < rows; ++r) {
        const T* gr = gp + r * d;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t s = map->row_slot[size_t(r * k + j)];
          if (s < 0) continue;
          const T* ys = yp + s * d;
          T acc = 0;
          for (int64_t c = 0; c < d; ++c) acc += gr[c] * ys[c];
          dwp[r * k + j] = acc;
        }
      }
    });
    return {dy, dw};
  });
}

// ------------------------------------------------------ device slot maps ----

DeviceSlotMap::DeviceSlotMap(std::shared_ptr<const SlotMap> map, Device device)
    : map_(std::move(map)), device_(device) {
  STRATA_CHECK(map_ && device_.is_cuda()) << "moe device slot map: needs a host map and a GPU, got " << device_.str();
  rows_ = map_->rows;
  k_ = map_->k;
  slots_ = map_->slots;
}

DeviceSlotMap::DeviceSlotMap(int64_t rows, int64_t k, Tensor row_slot, Tensor slot_src)
    : device_(slot_src.device()), rows_(rows), k_(k), slots_(slot_src.numel()) {
  STRATA_CHECK(rows >= 0 && k >= 1 && device_.is_cuda() && row_slot.device() == device_ &&
               row_slot.dtype() == DType::I64 && slot_src.dtype() == DType::I64 && row_slot.dim() == 1 &&
               slot_src.dim() == 1 && row_slot.is_contiguous() && slot_src.is_contiguous() &&
               row_slot.numel() == rows * k)
      << "moe device slot map: row_slot " << row_slot.str() << " and slot_src " << slot_src.str()
      << " must be contiguous i64 vectors on one GPU, row_slot of " << rows << " rows x " << k << " choices";
  row_slot_ = std::move(row_slot);
  slot_src_ = std::move(slot_src);
}

Tensor DeviceSlotMap::row_slot() { return upload(row_slot_, map_ ? map_->row_slot : std::vector<int64_t>()); }
Tensor DeviceSlotMap::slot_src() { return upload(slot_src_, map_ ? map_->slot_src : std::vector<int64_t>()); }

Tensor DeviceSlotMap::upload(Tensor& cached, const std::vector<int64_t>& v) {
  std::lock_guard<std::mutex> lock(mu_);
  // built on the device: both vectors are set at construction
  if (!cached.defined()) cached = Tensor::from_vector(v, {int64_t(v.size())}).to(device_);
  return cached;
}

std::shared_ptr<DeviceSlotMap> make_device_slot_map(const Routing& r, const DeviceRouting& dr, int64_t expert_base,
                                                    int64_t buffer_experts, int64_t capacity, Device device) {
  STRATA_CHECK(expert_base >= 0 && expert_base + r.experts <= buffer_experts)
      << "moe slot map: experts [" << expert_base << ", " << expert_base + r.experts << ") outside a buffer of "
      << buffer_experts << " experts";
  STRATA_CHECK(capacity >= r.used_capacity())
      << "moe slot map: buffer capacity " << capacity << " below the used capacity " << r.used_capacity();
  STRATA_CHECK(r.rows == 0 || (dr.defined() && dr.rows == r.rows && dr.experts == r.experts && dr.k == r.k &&
                               dr.capacity == r.capacity))
      << "moe slot map: the device routing (" << dr.rows << " rows) is not the routing of " << r.rows << " rows";
#ifdef STRATA_WITH_CUDA
  auto maps = backend::cuda::slot_map(r.rows > 0 ? dr : DeviceRouting{}, expert_base, buffer_experts, capacity, device);
  return std::make_shared<DeviceSlotMap>(r.rows, int64_t(r.k), maps.first, maps.second);
#else
  STRATA_FAIL() << "moe slot map: a device slot map on " << device.str() << " needs the CUDA backend";
  return nullptr;
#endif
}

Tensor dispatch_rows(const Tensor& x, std::shared_ptr<DeviceSlotMap> map) {
  check_rows(x, "moe dispatch", "input");
  STRATA_CHECK(x.size(0) == map->rows() && x.device() == map->device())
      << "moe dispatch: input " << x.str() << " for a slot map of " << map->rows() << " rows on "
      << map->device().str();
  Timed t(&profile().dispatch_fwd);
#ifdef STRATA_WITH_CUDA
  return dispatch_on_device(x, std::move(map));
#else
  STRATA_FAIL() << "moe dispatch: a device slot map needs the CUDA backend";
  return Tensor();
#endif
}

Tensor combine_rows(const Tensor& y, const Tensor& weights, std::shared_ptr<DeviceSlotMap> map) {
  check_combine(y, weights, map->rows(), map->k(), map->slots());
  STRATA_CHECK(y.device() == map->device() && weights.device() == map->device())
      << "moe combine: expert output " << y.str() << " and weights " << weights.str() << " for a slot map on "
      << map->device().str();
  Timed t(&profile().combine_fwd);
#ifdef STRATA_WITH_CUDA
  return combine_on_device(y, weights, std::move(map));
#else
  STRATA_FAIL() << "moe combine: a device slot map needs the CUDA backend";
  return Tensor();
#endif
}

Tensor all_to_all_rows(const Tensor& x, dist::Communicator& comm) {
  Timed t(&profile().exchange_fwd);
  Tensor send = x.detach().contiguous();
  // on x's device: a GPU send needs a GPU receive buffer (every communicator
  // refuses buffers on different devices)
  Tensor recv = Tensor::empty(send.shape(), send.dtype(), send.device());
  comm.all_to_all(send, recv);
  dist::Communicator* c = &comm;
  return record("moe_all_to_all", recv, {x}, [c](const Tensor& g) -> std::vector<Tensor> {
    Timed tb(&profile().exchange_bwd);
    Tensor gs = g.contiguous();
    Tensor back = Tensor::empty(gs.shape(), gs.dtype(), gs.device());
    c->all_to_all(gs, back);
    return {back};
  });
}

Tensor replace_rows(const Tensor& base, const std::vector<int64_t>& rows, const Tensor& values) {
  check_rows(base, "moe replace_rows", "base");
  check_rows(values, "moe replace_rows", "values");
  STRATA_CHECK(values.size(0) == int64_t(rows.size()) && values.size(1) == base.size(1) &&
               values.dtype() == base.dtype())
      << "moe replace_rows: values " << values.str() << " for " << rows.size() << " rows of " << base.str();
  Timed t(&profile().rows_fwd);
  const int64_t N = base.size(0), d = base.size(1);
  std::vector<uint8_t> seen(size_t(N), 0);
  for (int64_t r : rows) {
    STRATA_CHECK(r >= 0 && r < N) << "moe replace_rows: row " << r << " outside " << base.str();
    STRATA_CHECK(!seen[size_t(r)]) << "moe replace_rows: row " << r << " given twice";
    seen[size_t(r)] = 1;
  }
#ifdef STRATA_WITH_CUDA
  if (backend::on_cuda("moe replace_rows", {base, values})) {
    // the row list goes up once; the closure keeps it for the backward
    Tensor rows_dev = Tensor::from_vector(rows, {int64_t(rows.size())}).to(base.device());
    Tensor out = backend::cuda::replace_rows(base.detach(), rows_dev, values.detach());
    return record("moe_replace_rows", out, {base, values}, [rows_dev](const Tensor& g) -> std::vector<Tensor> {
      Timed tb(&profile().rows_bwd);
      auto grads = backend::cuda::replace_rows_backward(g, rows_dev);
      return {grads.first, grads.second};
    });
  }
#endif
  Tensor out = base.detach().clone();
  Tensor vc = values.detach().contiguous();
  dispatch_float(base.dtype(), "moe replace_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* op = out.data<T>();
    const T* vp = vc.data<T>();
    for (size_t i = 0; i < rows.size(); ++i) std::memcpy(op + rows[i] * d, vp + int64_t(i) * d, size_t(d) * sizeof(T));
  });
  auto idx = std::make_shared<const std::vector<int64_t>>(rows);
  return record("moe_replace_rows", out, {base, values}, [idx, N, d](const Tensor& gin) -> std::vector<Tensor> {
    Timed tb(&profile().rows_bwd);
    Tensor g = gin.contiguous();
    Tensor gbase = g.clone();
    Tensor gval = Tensor::empty({int64_t(idx->size()), d}, g.dtype());
    dispatch_float(g.dtype(), "moe replace_rows backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* gb = gbase.data<T>();
      T* gv = gval.data<T>();
      for (size_t i = 0; i < idx->size(); ++i) {
        const int64_t r = (*idx)[i];
        std::memcpy(gv + int64_t(i) * d, gb + r * d, size_t(d) * sizeof(T));
        std::memset(gb + r * d, 0, size_t(d) * sizeof(T));
      }
    });
    return {gbase, gval};
  });
}

}  // namespace strata::moe
