// GPU softmax and log-softmax over any axis of any strided view (contract:
// strata/backend/softmax.h; CPU twin: src/backend/cpu/softmax.cpp).
//
// The work is split into lanes, the 1-D runs along the softmax axis. Two
// kernels cover every layout:
//  - block per lane: the lane's elements are spread over the threads of one
//    block and max/sum are combined with a block reduction. Used when the lane
//    is unit-stride in x (the last axis of a contiguous tensor, so a warp's
//    reads are coalesced) or when there are too few lanes to give each a
//    thread. Short lanes get a one-warp block, so a lane of 13 does not idle
//    224 threads.
//  - thread per lane: for many strided lanes (softmax over a non-last axis)
//    neighbouring lanes are neighbours in memory, so one thread per lane
//    keeps a warp's reads coalesced; its sums accumulate in double like the CPU.
//
// Statistics are f32 for f32/f16/bf16 (f64 for f64). As on the CPU, a lane
// that is entirely -inf gives zeros (softmax) / -inf (log_softmax) instead of
// NaN, -inf entries get probability 0 and a NaN makes its lane NaN.
#include "strata/backend/cuda/softmax.h"

#include <array>
#include <limits>

#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::softmax_impl {
namespace {

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }

// ---------------------------------------------------------------- forward

template <class T>
__global__ void softmax_block_kernel(const T* __restrict__ x, T* __restrict__ y, StridedIndexer<2> ix, int64_t lanes,
                                     int64_t n, int64_t xs, int64_t ys, bool log) {
  using C = compute_t<T>;
  const C neg_inf = -std::numeric_limits<C>::infinity();
  for (int64_t lane = blockIdx.x; lane < lanes; lane += gridDim.x) {
    int64_t off[2];
    ix.offsets(lane, off);
    const T* xl = x + off[0];
    T* yl = y + off[1];
    C m = neg_inf;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const C v = load(xl + j * xs);
      m = v > m ? v : m;
    }
    m = block_reduce(m, ReduceMax{});
    if (m == neg_inf) {  // fully masked lane; m is the same in every thread, so the whole block takes this branch
      const T fill = store_cast<T>(log ? neg_inf : C(0));
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yl[j * ys] = fill;
      continue;
    }
    C s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += dexp(load(xl + j * xs) - m);
    s = block_reduce(s, ReduceSum{});
    if (log) {
      // (x - m) - log(s), not x - (m + log(s)): with logits ~1e4 the sum would
      // round away log(s) in f32 (the CPU does the same).
      const C log_s = dlog(s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yl[j * ys] = store_cast<T>((load(xl + j * xs) - m) - log_s);
    } else {
      const C inv = C(1) / s;
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yl[j * ys] = store_cast<T>(dexp(load(xl + j * xs) - m) * inv);
    }
  }
}

template <class T>
__global__ void softmax_thread_kernel(const T* __restrict__ x, T* __restrict__ y, StridedIndexer<2> ix, int64_t lanes,
                                      int64_t n, int64_t xs, int64_t ys, bool log) {
  using C = compute_t<T>;
  const C neg_inf = -std::numeric_limits<C>::infinity();
  for (int64_t lane = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; lane < lanes;
       lane += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(lane, off);
    const T* xl = x + off[0];
    T* yl = y + off[1];
    C m = neg_inf;
    for (int64_t j = 0; j < n; ++j) {
      const C v = load(xl + j * xs);
      m = v > m ? v : m;
    }
    if (m == neg_inf) {
      const T fill = store_cast<T>(log ? neg_inf : C(0));
      for (int64_t j = 0; j < n; ++j) yl[j * ys] = fill;
      continue;
    }
    double s = 0;  // a sequential sum over the whole lane: double, as on the CPU
    for (int64_t j = 0; j < n; ++j) s += double(dexp(load(xl + j * xs) - m));
    if (log) {
      const C log_s = C(::log(s));
      for (int64_t j = 0; j < n; ++j) yl[j * ys] = store_cast<T>((load(xl + j * xs) - m) - log_s);
    } else {
      const C inv = C(1.0 / s);
      for (int64_t j = 0; j < n; ++j) yl[j * ys] = store_cast<T>(dexp(load(xl + j * xs) - m) * inv);
    }
  }
}

// ---------------------------------------------------------------- backward
// softmax:     dx = y * (g - sum(g * y))
// log_softmax: dx = g - exp(y) * sum(g)

template <class T, bool Log>
__global__ void backward_block_kernel(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                                      StridedIndexer<3> ix, int64_t lanes, int64_t n, int64_t gs, int64_t ys,
                                      int64_t ds) {
  using C = compute_t<T>;
  for (int64_t lane = blockIdx.x; lane < lanes; lane += gridDim.x) {
    int64_t off[3];
    ix.offsets(lane, off);
    const T* gl = g + off[0];
    const T* yl = y + off[1];
    T* dl = dx + off[2];
    C acc = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      acc += Log ? load(gl + j * gs) : load(gl + j * gs) * load(yl + j * ys);
    acc = block_reduce(acc, ReduceSum{});
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const C gv = load(gl + j * gs), yv = load(yl + j * ys);
      dl[j * ds] = store_cast<T>(Log ? gv - dexp(yv) * acc : yv * (gv - acc));
    }
  }
}

template <class T, bool Log>
__global__ void backward_thread_kernel(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                                       StridedIndexer<3> ix, int64_t lanes, int64_t n, int64_t gs, int64_t ys,
                                       int64_t ds) {
  using C = compute_t<T>;
  for (int64_t lane = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; lane < lanes;
       lane += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    ix.offsets(lane, off);
    const T* gl = g + off[0];
    const T* yl = y + off[1];
    T* dl = dx + off[2];
    double acc = 0;
    for (int64_t j = 0; j < n; ++j)
      acc += Log ? double(load(gl + j * gs)) : double(load(gl + j * gs)) * double(load(yl + j * ys));
    const C a = C(acc);
    for (int64_t j = 0; j < n; ++j) {
      const C gv = load(gl + j * gs), yv = load(yl + j * ys);
      dl[j * ds] = store_cast<T>(Log ? gv - dexp(yv) * a : yv * (gv - a));
    }
  }
}

// ---------------------------------------------------------------- host helpers


// A lane per thread pays off for strided lanes when there are enough of them
// to fill the GPU; otherwise a block per lane.
bool thread_per_lane(int64_t axis_stride, int64_t lanes) { return axis_stride != 1 && lanes >= 1024; }

// Block size for a lane of n: one warp for short lanes, at most 256 threads.
int lane_threads(int64_t n) {
  const int64_t t = (n + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > 256 ? 256 : t));
}
unsigned lane_blocks(int64_t lanes) {
  const int64_t cap = int64_t(context().sm_count > 0 ? context().sm_count : 80) * 32;
  return unsigned(lanes < cap ? lanes : cap);
}

Tensor forward(const Tensor& x, int64_t axis, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  const int64_t a = wrap_dim(axis, x.dim(), op);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.numel() == 0) return;
    const int64_t n = x.shape()[size_t(a)], lanes = x.numel() / n;
    const StridedIndexer<2> ix = lane_indexer<2>({&x, &y}, a);
    const int64_t xs = x.strides()[size_t(a)], ys = y.strides()[size_t(a)];
    const T* xp = storage_ptr<T>(x);
    T* yp = storage_ptr<T>(y);
    cudaStream_t stream = compute_stream();
    if (thread_per_lane(xs, lanes))
      softmax_thread_kernel<T><<<blocks_for(lanes), kThreads, 0, stream>>>(xp, yp, ix, lanes, n, xs, ys, log);
    else
      softmax_block_kernel<T><<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(xp, yp, ix, lanes, n, xs, ys, log);
    STRATA_KERNEL_CHECK();
  });
  return y;
}

template <bool Log>
Tensor backward(const Tensor& g, const Tensor& y, int64_t axis) {
  const char* op = Log ? "log_softmax_backward" : "softmax_backward";
  STRATA_CHECK(g.shape() == y.shape() && g.dtype() == y.dtype())
      << op << ": gradient " << g.str() << " does not match the output " << y.str();
  const int64_t a = wrap_dim(axis, y.dim(), op);
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  dispatch_floating(y.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (y.numel() == 0) return;
    const int64_t n = y.shape()[size_t(a)], lanes = y.numel() / n;
    const StridedIndexer<3> ix = lane_indexer<3>({&g, &y, &dx}, a);
    const int64_t gs = g.strides()[size_t(a)], ys = y.strides()[size_t(a)], ds = dx.strides()[size_t(a)];
    const T* gp = storage_ptr<T>(g);
    const T* yp = storage_ptr<T>(y);
    T* dp = storage_ptr<T>(dx);
    cudaStream_t stream = compute_stream();
    // the stride that decides coalescing is that of the inputs read along the lane
    if (thread_per_lane(ys, lanes))
      backward_thread_kernel<T, Log><<<blocks_for(lanes), kThreads, 0, stream>>>(gp, yp, dp, ix, lanes, n, gs, ys, ds);
    else
      backward_block_kernel<T, Log>
          <<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(gp, yp, dp, ix, lanes, n, gs, ys, ds);
    STRATA_KERNEL_CHECK();
  });
  return dx;
}

}  // namespace
}  // namespace strata::cuda::softmax_impl

namespace strata::backend::cuda {

namespace impl = ::strata::cuda::softmax_impl;

Tensor softmax(const Tensor& x, int64_t axis) { return impl::forward(x, axis, false); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return impl::forward(x, axis, true); }
Tensor softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis) {
  return impl::backward<false>(grad_y, y, axis);
}
Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis) {
  return impl::backward<true>(grad_y, y, axis);
}

}  // namespace strata::backend::cuda
