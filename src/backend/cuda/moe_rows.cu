// GPU row movement of the MoE layer (declarations and contract:
// strata/backend/cuda/moe_rows.h). Each kernel gives every output element to
// one thread (or, for the weight gradients, one warp), which reads its <= k
// source rows in j order: no atomics, no races, the same bits every run.
// Row tensors are read through (pointer, row stride, column stride), so any
// 2-D view works without a copy.
#include <cstdint>

#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/backend/cuda/moe_rows.h"
#include "strata/core/dispatch.h"

namespace strata::backend::cuda {

namespace {

using ::strata::cuda::blocks_for;
using ::strata::cuda::compute_t;
using ::strata::cuda::kThreads;
using ::strata::cuda::load;
using ::strata::cuda::storage_ptr;
using ::strata::cuda::store_cast;

cudaStream_t stream() { return ::strata::cuda::compute_stream(); }

// A 2-D view's elements: element (r, c) at p[r * s0 + c * s1].
template <class T>
struct Rows {
  const T* p;
  int64_t s0, s1;
  __device__ __forceinline__ const T& raw(int64_t r, int64_t c) const { return p[r * s0 + c * s1]; }
  __device__ __forceinline__ compute_t<T> at(int64_t r, int64_t c) const { return load(p + r * s0 + c * s1); }
};

template <class T>
Rows<T> rows_of(const Tensor& t) {
  return {storage_ptr<const T>(t) + t.offset(), t.strides()[0], t.strides()[1]};
}

void check_rows(const Tensor& t, const char* op, const char* what) {
  STRATA_CHECK(t.device().is_cuda()) << op << ": " << what << " " << t.str() << " must be on a GPU";
  STRATA_CHECK(t.dim() == 2) << op << ": " << what << " must be [rows, dim], got " << t.str();
}

// A device slot-map vector: contiguous i64 [n] on `like`'s device.
void check_map(const Tensor& m, int64_t n, const Tensor& like, const char* op, const char* what) {
  STRATA_CHECK(m.device() == like.device() && m.dtype() == DType::I64 && m.dim() == 1 && m.is_contiguous() &&
               m.numel() == n)
      << op << ": " << what << " " << m.str() << " must be a contiguous i64[" << n << "] on the device of "
      << like.str();
}

const int64_t* map_ptr(const Tensor& m) { return storage_ptr<const int64_t>(m) + m.offset(); }

// ---------------------------------------------------------------- kernels

// out [slots, d]: slot s = x[src / k] with src = slot_src[s], zero when empty.
template <class T>
__global__ void gather_to_slots_kernel(T* out, Rows<T> x, const int64_t* slot_src, int64_t slots, int64_t d,
                                       int64_t k, int64_t rows) {
  STRATA_GRID_LOOP(t, slots * d) {
    const int64_t s = t / d, c = t % d;
    const int64_t src = slot_src[s];
    out[t] = src >= 0 && src < rows * k ? x.raw(src / k, c) : T();
  }
}

// out [rows, d]: row r = sum of g[row_slot[r*k + j]] over dispatched j, in j order.
template <class T>
__global__ void sum_slots_kernel(T* out, Rows<T> g, const int64_t* row_slot, int64_t rows, int64_t d, int64_t k,
                                 int64_t slots) {
  STRATA_GRID_LOOP(t, rows * d) {
    const int64_t r = t / d, c = t % d;
    compute_t<T> acc = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t s = row_slot[r * k + j];
      if (s >= 0 && s < slots) acc += g.at(s, c);
    }
    out[t] = store_cast<T>(acc);
  }
}

// out [rows, d]: row r = sum of w[r, j] * y[row_slot[r*k + j]] over dispatched j, in j order.
template <class T>
__global__ void combine_kernel(T* out, Rows<T> y, Rows<T> w, const int64_t* row_slot, int64_t rows, int64_t d,
                               int64_t k, int64_t slots) {
  STRATA_GRID_LOOP(t, rows * d) {
    const int64_t r = t / d, c = t % d;
    compute_t<T> acc = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t s = row_slot[r * k + j];
      if (s >= 0 && s < slots) acc += w.at(r, j) * y.at(s, c);
    }
    out[t] = store_cast<T>(acc);
  }
}

// dy [slots, d]: slot s = w[src / k, src % k] * g[src / k] (src = slot_src[s]), zero when empty.
template <class T>
__global__ void combine_dy_kernel(T* dy, Rows<T> g, Rows<T> w, const int64_t* slot_src, int64_t slots, int64_t d,
                                  int64_t k, int64_t rows) {
  STRATA_GRID_LOOP(t, slots * d) {
    const int64_t s = t / d, c = t % d;
    const int64_t src = slot_src[s];
    if (src >= 0 && src < rows * k) {
      const int64_t r = src / k;
      dy[t] = store_cast<T>(w.at(r, src % k) * g.at(r, c));
    } else {
      dy[t] = T();
    }
  }
}

// dw [rows, k]: (r, j) = <g[r], y[row_slot[r*k + j]]>, zero when not dispatched.
// One warp per (r, j): lane l sums columns l, l+32, ..., then a fixed shuffle
// tree adds the lanes. Every lane of a warp walks the same (r, j) sequence, so
// the full-mask shuffles see all 32 lanes.
template <class T>
__global__ void combine_dw_kernel(T* dw, Rows<T> g, Rows<T> y, const int64_t* row_slot, int64_t rows, int64_t d,
                                  int64_t k, int64_t slots) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t e = warp; e < rows * k; e += warps) {
    const int64_t r = e / k, s = row_slot[e];
    compute_t<T> acc = 0;
    if (s >= 0 && s < slots)
      for (int64_t c = lane; c < d; c += 32) acc += g.at(r, c) * y.at(s, c);
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) dw[e] = store_cast<T>(acc);
  }
}

// out [N, d] (contiguous) = x, element by element.
template <class T>
__global__ void copy_rows_kernel(T* out, Rows<T> x, int64_t N, int64_t d) {
  STRATA_GRID_LOOP(t, N * d) out[t] = x.raw(t / d, t % d);
}

// out (contiguous [N, d]) row rows[i] = v[i].
template <class T>
__global__ void put_rows_kernel(T* out, Rows<T> v, const int64_t* rows, int64_t n, int64_t d, int64_t N) {
  STRATA_GRID_LOOP(t, n * d) {
    const int64_t i = t / d, c = t % d, r = rows[i];
    if (r >= 0 && r < N) out[r * d + c] = v.raw(i, c);
  }
}

// gval (contiguous [n, d]) row i = g[rows[i]]; gbase (contiguous [N, d], a copy of g) row rows[i] = 0.
template <class T>
__global__ void take_rows_kernel(T* gval, T* gbase, Rows<T> g, const int64_t* rows, int64_t n, int64_t d, int64_t N) {
  STRATA_GRID_LOOP(t, n * d) {
    const int64_t i = t / d, c = t % d, r = rows[i];
    if (r >= 0 && r < N) {
      gval[t] = g.raw(r, c);
      gbase[r * d + c] = T();
    } else {
      gval[t] = T();
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- dispatch

Tensor gather_to_slots(const Tensor& x, const Tensor& slot_src, int64_t k) {
  const char* op = "moe dispatch";
  check_rows(x, op, "input");
  STRATA_CHECK(k >= 1) << op << ": " << k << " choices per row";
  const int64_t slots = slot_src.numel(), rows = x.size(0), d = x.size(1);
  check_map(slot_src, slots, x, op, "slot_src");
  Tensor out = Tensor::empty({slots, d}, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    gather_to_slots_kernel<T><<<blocks_for(slots * d), kThreads, 0, stream()>>>(
        storage_ptr<T>(out), rows_of<T>(x), map_ptr(slot_src), slots, d, k, rows);
    STRATA_KERNEL_CHECK();
  });
  return out;
}

Tensor sum_slots_to_rows(const Tensor& g, const Tensor& row_slot, int64_t k) {
  const char* op = "moe dispatch backward";
  check_rows(g, op, "gradient");
  STRATA_CHECK(k >= 1 && row_slot.numel() % k == 0)
      << op << ": row_slot " << row_slot.str() << " does not hold " << k << " choices per row";
  const int64_t rows = row_slot.numel() / k, slots = g.size(0), d = g.size(1);
  check_map(row_slot, rows * k, g, op, "row_slot");
  Tensor out = Tensor::empty({rows, d}, g.dtype(), g.device());
  if (out.numel() == 0) return out;
  dispatch_floating(g.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sum_slots_kernel<T><<<blocks_for(rows * d), kThreads, 0, stream()>>>(storage_ptr<T>(out), rows_of<T>(g),
                                                                         map_ptr(row_slot), rows, d, k, slots);
    STRATA_KERNEL_CHECK();
  });
  return out;
}

// ---------------------------------------------------------------- combine

Tensor combine_slots(const Tensor& y, const Tensor& weights, const Tensor& row_slot) {
  const char* op = "moe combine";
  check_rows(y, op, "expert output");
  check_rows(weights, op, "weights");
  STRATA_CHECK(weights.device() == y.device() && weights.dtype() == y.dtype())
      << op << ": weights " << weights.str() << " and expert output " << y.str() << " differ in device or dtype";
  const int64_t rows = weights.size(0), k = weights.size(1), slots = y.size(0), d = y.size(1);
  check_map(row_slot, rows * k, y, op, "row_slot");
  Tensor out = Tensor::empty({rows, d}, y.dtype(), y.device());
  if (out.numel() == 0) return out;
  dispatch_floating(y.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    combine_kernel<T><<<blocks_for(rows * d), kThreads, 0, stream()>>>(
        storage_ptr<T>(out), rows_of<T>(y), rows_of<T>(weights), map_ptr(row_slot), rows, d, k, slots);
    STRATA_KERNEL_CHECK();
  });
  return out;
}

std::pair<Tensor, Tensor> combine_slots_backward(const Tensor& grad, const Tensor& y, const Tensor& weights,
                                                 const Tensor& row_slot, const Tensor& slot_src) {
  const char* op = "moe combine backward";
  check_rows(grad, op, "gradient");
  check_rows(y, op, "expert output");
  check_rows(weights, op, "weights");
  const int64_t rows = weights.size(0), k = weights.size(1), slots = y.size(0), d = y.size(1);
  STRATA_CHECK(grad.device() == y.device() && weights.device() == y.device() && grad.dtype() == y.dtype() &&
               weights.dtype() == y.dtype() && grad.size(0) == rows && grad.size(1) == d)
      << op << ": gradient " << grad.str() << ", expert output " << y.str() << " and weights " << weights.str()
      << " do not match";
  check_map(row_slot, rows * k, y, op, "row_slot");
  check_map(slot_src, slots, y, op, "slot_src");
  Tensor dy = Tensor::empty({slots, d}, y.dtype(), y.device());
  Tensor dw = Tensor::empty({rows, k}, y.dtype(), y.device());
  dispatch_floating(y.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows<T> g = rows_of<T>(grad), w = rows_of<T>(weights);
    if (slots * d > 0) {
      combine_dy_kernel<T><<<blocks_for(slots * d), kThreads, 0, stream()>>>(storage_ptr<T>(dy), g, w,
                                                                              map_ptr(slot_src), slots, d, k, rows);
      STRATA_KERNEL_CHECK();
    }
    if (rows * k > 0) {
      combine_dw_kernel<T><<<blocks_for(rows * k * 32), kThreads, 0, stream()>>>(
          storage_ptr<T>(dw), g, rows_of<T>(y), map_ptr(row_slot), rows, d, k, slots);
      STRATA_KERNEL_CHECK();
    }
  });
  return {dy, dw};
}

// ---------------------------------------------------------------- replace_rows

Tensor replace_rows(const Tensor& base, const Tensor& rows, const Tensor& values) {
  const char* op = "moe replace_rows";
  check_rows(base, op, "base");
  check_rows(values, op, "values");
  const int64_t N = base.size(0), d = base.size(1), n = values.size(0);
  STRATA_CHECK(values.device() == base.device() && values.dtype() == base.dtype() && values.size(1) == d)
      << op << ": values " << values.str() << " for rows of " << base.str();
  check_map(rows, n, base, op, "rows");
  Tensor out = Tensor::empty({N, d}, base.dtype(), base.device());
  if (out.numel() == 0) return out;
  dispatch_floating(base.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    copy_rows_kernel<T><<<blocks_for(N * d), kThreads, 0, stream()>>>(storage_ptr<T>(out), rows_of<T>(base), N, d);
    STRATA_KERNEL_CHECK();
    if (n > 0) {  // after the copy in stream order
      put_rows_kernel<T><<<blocks_for(n * d), kThreads, 0, stream()>>>(storage_ptr<T>(out), rows_of<T>(values),
                                                                       map_ptr(rows), n, d, N);
      STRATA_KERNEL_CHECK();
    }
  });
  return out;
}

std::pair<Tensor, Tensor> replace_rows_backward(const Tensor& grad, const Tensor& rows) {
  const char* op = "moe replace_rows backward";
  check_rows(grad, op, "gradient");
  const int64_t N = grad.size(0), d = grad.size(1), n = rows.numel();
  check_map(rows, n, grad, op, "rows");
  Tensor gbase = Tensor::empty({N, d}, grad.dtype(), grad.device());
  Tensor gval = Tensor::empty({n, d}, grad.dtype(), grad.device());
  if (d == 0) return {gbase, gval};
  dispatch_floating(grad.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Rows<T> g = rows_of<T>(grad);
    if (N > 0) {
      copy_rows_kernel<T><<<blocks_for(N * d), kThreads, 0, stream()>>>(storage_ptr<T>(gbase), g, N, d);
      STRATA_KERNEL_CHECK();
    }
    if (n > 0) {  // zeroes gbase's replaced rows after the copy, in stream order
      take_rows_kernel<T><<<blocks_for(n * d), kThreads, 0, stream()>>>(storage_ptr<T>(gval), storage_ptr<T>(gbase),
                                                                        g, map_ptr(rows), n, d, N);
      STRATA_KERNEL_CHECK();
    }
  });
  return {gbase, gval};
}

}  // namespace strata::backend::cuda
