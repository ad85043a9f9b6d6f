// GPU reductions over one axis, sum of all elements, prefix sums and top-k on
// any strided view (contract: strata/backend/reduce.h; CPU twin:
// src/backend/cpu/reduce.cpp).
//
// Axis ops walk lanes, the 1-D runs along the axis; lane l (the other dims,
// row-major) produces output l (or output lane l for cumsum/topk). Two kernel
// shapes cover every layout:
//  - block per lane: the lane's elements are spread over a block and combined
//    with a block reduction (or a block scan). Used when the lane is unit-stride
//    (the last axis of a contiguous tensor: coalesced reads) or when there are
//    too few lanes to give each a thread;
//  - thread per lane: many strided lanes (an axis other than the last), where
//    neighbouring lanes are neighbours in memory, so a warp's reads coalesce.
// As on the CPU, float sums accumulate in double and integer sums in int64,
// max/argmax/topk rank NaN above every number and break ties by the lower
// index. Every reduction combines in a fixed order (no atomics), so repeated
// runs are bit-identical.
#include "strata/backend/cuda/reduce.h"

#include <array>
#include <type_traits>

#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::reduce_impl {
namespace {

// top-k with k up to this keeps a sorted list per thread; larger k ranks every element.
constexpr int kSmallK = 16;

// Accumulator of sums: double for floating types, int64 for integers (as the CPU).
template <class T>
using acc_t = std::conditional_t<std::is_integral_v<T>, long long, double>;

// NaN ranks above every number (and equal to another NaN), as in the CPU's `greater`.
template <class C>
__device__ __forceinline__ bool greater(C a, C b) {
  return a > b || (a != a && b == b);
}

// (v, i) becomes (ov, oi) when that ranks higher: a greater value, or an
// equal one at a lower index. i < 0 marks an empty slot. The ranking is a
// strict total order, so the combination order does not change the result.
template <class C>
__device__ __forceinline__ void arg_combine(C& v, long long& i, C ov, long long oi) {
  if (oi < 0) return;
  if (i < 0 || greater(ov, v) || (!greater(v, ov) && oi < i)) {
    v = ov;
    i = oi;
  }
}

template <class C>
__device__ void block_argmax(C& v, long long& i) {
  __shared__ C warp_v[32];
  __shared__ long long warp_i[32];
  for (int o = 16; o > 0; o >>= 1) {
    const C ov = __shfl_xor_sync(kFullWarpMask, v, o);
    const long long oi = __shfl_xor_sync(kFullWarpMask, i, o);
    arg_combine(v, i, ov, oi);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    warp_v[threadIdx.x >> 5] = v;
    warp_i[threadIdx.x >> 5] = i;
  }
  __syncthreads();
  v = warp_v[0];
  i = warp_i[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) arg_combine(v, i, warp_v[w], warp_i[w]);
}

template <class T, class A>
__device__ __forceinline__ T finish_sum(A acc, bool average, double scale) {
  return average ? store_cast<T>(double(acc) * scale) : store_cast<T>(acc);
}

// Lane loops: block per lane iterates lanes by block, thread per lane by thread.
#define STRATA_FOR_LANE_BLOCK(lane, lanes) for (int64_t lane = blockIdx.x; lane < (lanes); lane += gridDim.x)
#define STRATA_FOR_LANE_THREAD(lane, lanes)                                                  \
  for (int64_t lane = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; lane < (lanes); \
       lane += int64_t(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------- sum / mean

template <class T>
__global__ void sum_block_kernel(const T* __restrict__ x, StridedIndexer<1> ix, int64_t lanes, int64_t n,
                                 int64_t xs, bool average, double scale, T* __restrict__ out) {
  using A = acc_t<T>;
  STRATA_FOR_LANE_BLOCK(lane, lanes) {
    int64_t off[1];
    ix.offsets(lane, off);
    A acc = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += A(load(x + off[0] + j * xs));
    acc = block_reduce(acc, ReduceSum{});
    if (threadIdx.x == 0) out[lane] = finish_sum<T>(acc, average, scale);
  }
}

template <class T>
__global__ void sum_thread_kernel(const T* __restrict__ x, StridedIndexer<1> ix, int64_t lanes, int64_t n,
                                  int64_t xs, bool average, double scale, T* __restrict__ out) {
  using A = acc_t<T>;
  STRATA_FOR_LANE_THREAD(lane, lanes) {
    int64_t off[1];
    ix.offsets(lane, off);
    A acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += A(load(x + off[0] + j * xs));
    out[lane] = finish_sum<T>(acc, average, scale);
  }
}

// ---------------------------------------------------------------- sum of all elements
// Stage 1: a fixed number of blocks (set by n only) each sum a grid-stride
// share into partial[block]; stage 2: one block adds the partials.

template <class T>
__global__ void sum_all_partial_kernel(const T* __restrict__ x, StridedIndexer<1> ix, int64_t n,
                                       double* __restrict__ partial) {
  double acc = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    acc += double(load(x + off[0]));
  }
  acc = block_reduce(acc, ReduceSum{});
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <class T>
__global__ void sum_all_finish_kernel(const double* __restrict__ partial, int64_t parts, T* __restrict__ out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < parts; i += blockDim.x) acc += partial[i];
  acc = block_reduce(acc, ReduceSum{});
  if (threadIdx.x == 0) *out = store_cast<T>(acc);
}

// ---------------------------------------------------------------- max / argmax

template <class T>
__global__ void max_block_kernel(const T* __restrict__ x, StridedIndexer<1> ix, int64_t lanes, int64_t n, int64_t xs,
                                 T* __restrict__ values, int64_t* __restrict__ indices) {
  using C = compute_t<T>;
  STRATA_FOR_LANE_BLOCK(lane, lanes) {
    int64_t off[1];
    ix.offsets(lane, off);
    C best = C(0);
    long long bi = -1;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) arg_combine(best, bi, C(load(x + off[0] + j * xs)), j);
    block_argmax(best, bi);
    if (threadIdx.x == 0) {
      values[lane] = store_cast<T>(best);
      indices[lane] = bi;
    }
  }
}

template <class T>
__global__ void max_thread_kernel(const T* __restrict__ x, StridedIndexer<1> ix, int64_t lanes, int64_t n, int64_t xs,
                                  T* __restrict__ values, int64_t* __restrict__ indices) {
  using C = compute_t<T>;
  STRATA_FOR_LANE_THREAD(lane, lanes) {
    int64_t off[1];
    ix.offsets(lane, off);
    C best = load(x + off[0]);
    long long bi = 0;
    for (int64_t j = 1; j < n; ++j) {
      const C v = load(x + off[0] + j * xs);
      if (greater(v, best)) best = v, bi = j;  // strict: the first maximum stays
    }
    values[lane] = store_cast<T>(best);
    indices[lane] = bi;
  }
}

// ---------------------------------------------------------------- cumsum

// Inclusive scan of a lane in chunks of blockDim.x: a warp scan by shuffles,
// the warps' totals added in order, and a carry across chunks.
template <class T>
__global__ void cumsum_block_kernel(const T* __restrict__ x, T* __restrict__ y, StridedIndexer<2> ix, int64_t lanes,
                                    int64_t n, int64_t xs, int64_t ys) {
  using A = acc_t<T>;
  __shared__ A warp_tot[32];
  const int lane_id = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  STRATA_FOR_LANE_BLOCK(lane, lanes) {
    int64_t off[2];
    ix.offsets(lane, off);
    A carry = 0;
    for (int64_t base = 0; base < n; base += blockDim.x) {
      const int64_t j = base + threadIdx.x;
      A v = j < n ? A(load(x + off[0] + j * xs)) : A(0);
      for (int o = 1; o < 32; o <<= 1) {
        const A t = __shfl_up_sync(kFullWarpMask, v, o);
        if (lane_id >= o) v += t;
      }
      if (lane_id == 31) warp_tot[warp] = v;
      __syncthreads();
      A before = carry, total = carry;
      for (int w = 0; w < warps; ++w) {
        if (w < warp) before += warp_tot[w];
        total += warp_tot[w];
      }
      if (j < n) y[off[1] + j * ys] = store_cast<T>(before + v);
      carry = total;
      __syncthreads();  // warp_tot is rewritten by the next chunk
    }
  }
}

template <class T>
__global__ void cumsum_thread_kernel(const T* __restrict__ x, T* __restrict__ y, StridedIndexer<2> ix, int64_t lanes,
                                     int64_t n, int64_t xs, int64_t ys) {
  using A = acc_t<T>;
  STRATA_FOR_LANE_THREAD(lane, lanes) {
    int64_t off[2];
    ix.offsets(lane, off);
    A acc = 0;
    for (int64_t j = 0; j < n; ++j) {
      acc += A(load(x + off[0] + j * xs));
      y[off[1] + j * ys] = store_cast<T>(acc);
    }
  }
}

// ---------------------------------------------------------------- top-k
// Output lane l holds the k best of input lane l, best first; indexer
// operands: 0 x, 1 values, 2 indices.

// k <= kSmallK: one thread per lane keeps a sorted list. Elements arrive in
// index order and only a strictly greater value moves ahead of an entry, so
// equal values stay in index order (ties by lower index).
template <class T>
__global__ void topk_thread_kernel(const T* __restrict__ x, StridedIndexer<3> ix, int64_t lanes, int64_t n,
                                   int64_t xs, int k, T* __restrict__ values, int64_t vs,
                                   int64_t* __restrict__ indices, int64_t is) {
  using C = compute_t<T>;
  STRATA_FOR_LANE_THREAD(lane, lanes) {
    int64_t off[3];
    ix.offsets(lane, off);
    C val[kSmallK];
    long long idx[kSmallK];
    int count = 0;
    for (int64_t j = 0; j < n; ++j) {
      const C v = load(x + off[0] + j * xs);
      if (count == k && !greater(v, val[k - 1])) continue;
      int p = count < k ? count++ : k - 1;  // a full list drops its last entry
      while (p > 0 && greater(v, val[p - 1])) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
      }
      val[p] = v;
      idx[p] = j;
    }
    for (int q = 0; q < k; ++q) {
      values[off[1] + q * vs] = store_cast<T>(val[q]);
      indices[off[2] + q * is] = idx[q];
    }
  }
}

// k > kSmallK: one block per lane; element j's rank is the number of
// elements that rank above it (greater, or equal at a lower index), a
// permutation of 0..n-1, and the elements of rank < k are written there.
// O(n^2) per lane: a correct fallback, not a fast path.
template <class T>
__global__ void topk_rank_kernel(const T* __restrict__ x, StridedIndexer<3> ix, int64_t lanes, int64_t n, int64_t xs,
                                 int64_t k, T* __restrict__ values, int64_t vs, int64_t* __restrict__ indices,
                                 int64_t is) {
  using C = compute_t<T>;
  STRATA_FOR_LANE_BLOCK(lane, lanes) {
    int64_t off[3];
    ix.offsets(lane, off);
    const T* xl = x + off[0];
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const C v = load(xl + j * xs);
      int64_t rank = 0;
      for (int64_t i = 0; i < n; ++i) {
        const C u = load(xl + i * xs);
        rank += (greater(u, v) || (i < j && !greater(v, u))) ? 1 : 0;
      }
      if (rank < k) {
        values[off[1] + rank * vs] = store_cast<T>(v);
        indices[off[2] + rank * is] = j;
      }
    }
  }
}

#undef STRATA_FOR_LANE_BLOCK
#undef STRATA_FOR_LANE_THREAD

// ---------------------------------------------------------------- host helpers


// Number of lanes along `axis` (the product of the other dims; not numel / n, which fails for n = 0).
int64_t lane_count(const Tensor& x, int64_t axis) {
  int64_t lanes = 1;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != axis) lanes *= x.shape()[size_t(d)];
  return lanes;
}

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

Shape reduced_shape(const Shape& s, int64_t axis, bool keepdim) {
  Shape r = s;
  if (keepdim) r[size_t(axis)] = 1;
  else r.erase(r.begin() + axis);
  return r;
}

template <class T>
Tensor sum_impl(const Tensor& x, int64_t axis, bool keepdim, bool average, const char* op) {
  const int64_t a = wrap_dim(axis, x.dim(), op);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), a, keepdim), x.dtype(), x.device());
  const int64_t n = x.shape()[size_t(a)], lanes = lane_count(x, a);
  if (lanes == 0) return out;
  const double scale = average ? 1.0 / double(n) : 1.0;  // mean over 0 elements is NaN, as on the CPU
  const StridedIndexer<1> ix = lane_indexer<1>({&x}, a);
  const int64_t xs = x.strides()[size_t(a)];
  cudaStream_t stream = compute_stream();
  if (thread_per_lane(xs, lanes))
    sum_thread_kernel<T><<<blocks_for(lanes), kThreads, 0, stream>>>(storage_ptr<T>(x), ix, lanes, n, xs, average,
                                                                     scale, storage_ptr<T>(out));
  else
    sum_block_kernel<T><<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(storage_ptr<T>(x), ix, lanes, n, xs,
                                                                            average, scale, storage_ptr<T>(out));
  STRATA_KERNEL_CHECK();
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  return dispatch_dtype(x.dtype(), "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return sum_impl<T>(x, axis, keepdim, false, "sum");
  });
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  STRATA_CHECK(is_floating(x.dtype())) << "mean: expected a floating tensor, got " << x.str();
  return dispatch_dtype(x.dtype(), "mean", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return sum_impl<T>(x, axis, keepdim, true, "mean");
  });
}

Tensor sum_all(const Tensor& x) {
  return dispatch_dtype(x.dtype(), "sum_all", [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor out = Tensor::empty({}, x.dtype(), x.device());
    const int64_t n = x.numel();
    // the block count depends on n only, so the summation order (and the
    // result) is the same on every run and every GPU
    const int64_t per_block = int64_t(kThreads) * 8;
    int64_t parts = (n + per_block - 1) / per_block;
    if (parts > 1024) parts = 1024;
    Tensor partial = Tensor::empty({parts > 0 ? parts : 1}, DType::F64, x.device());
    cudaStream_t stream = compute_stream();
    if (parts > 0) {
      sum_all_partial_kernel<T><<<unsigned(parts), kThreads, 0, stream>>>(storage_ptr<T>(x), make_indexer<1>({&x}), n,
                                                                         storage_ptr<double>(partial));
      STRATA_KERNEL_CHECK();
    }
    sum_all_finish_kernel<T><<<1, kThreads, 0, stream>>>(storage_ptr<double>(partial), parts, storage_ptr<T>(out));
    STRATA_KERNEL_CHECK();
    return out;
  });
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t axis, bool keepdim) {
  const int64_t a = wrap_dim(axis, x.dim(), "max");
  const int64_t n = x.shape()[size_t(a)];
  STRATA_CHECK(n > 0) << "max: cannot reduce axis " << axis << " of size 0 in " << shape_str(x.shape());
  const Shape rs = reduced_shape(x.shape(), a, keepdim);
  Tensor values = Tensor::empty(rs, x.dtype(), x.device());
  Tensor indices = Tensor::empty(rs, DType::I64, x.device());
  dispatch_dtype(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t lanes = lane_count(x, a);
    if (lanes == 0) return;
    const StridedIndexer<1> ix = lane_indexer<1>({&x}, a);
    const int64_t xs = x.strides()[size_t(a)];
    cudaStream_t stream = compute_stream();
    if (thread_per_lane(xs, lanes))
      max_thread_kernel<T><<<blocks_for(lanes), kThreads, 0, stream>>>(
          storage_ptr<T>(x), ix, lanes, n, xs, storage_ptr<T>(values), storage_ptr<int64_t>(indices));
    else
      max_block_kernel<T><<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(
          storage_ptr<T>(x), ix, lanes, n, xs, storage_ptr<T>(values), storage_ptr<int64_t>(indices));
    STRATA_KERNEL_CHECK();
  });
  return {values, indices};
}

Tensor cumsum(const Tensor& x, int64_t axis) {
  const int64_t a = wrap_dim(axis, x.dim(), "cumsum");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_dtype(x.dtype(), "cumsum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.numel() == 0) return;
    const int64_t n = x.shape()[size_t(a)], lanes = lane_count(x, a);
    const StridedIndexer<2> ix = lane_indexer<2>({&x, &out}, a);
    const int64_t xs = x.strides()[size_t(a)], ys = out.strides()[size_t(a)];
    cudaStream_t stream = compute_stream();
    if (thread_per_lane(xs, lanes))
      cumsum_thread_kernel<T><<<blocks_for(lanes), kThreads, 0, stream>>>(storage_ptr<T>(x), storage_ptr<T>(out), ix,
                                                                          lanes, n, xs, ys);
    else
      cumsum_block_kernel<T><<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(
          storage_ptr<T>(x), storage_ptr<T>(out), ix, lanes, n, xs, ys);
    STRATA_KERNEL_CHECK();
  });
  return out;
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis) {
  const int64_t a = wrap_dim(axis, x.dim(), "topk");
  const int64_t n = x.shape()[size_t(a)];
  STRATA_CHECK(k >= 0 && k <= n) << "topk: k=" << k << " out of range for axis " << axis << " of size " << n
                                 << " in " << shape_str(x.shape());
  Shape os = x.shape();
  os[size_t(a)] = k;
  Tensor values = Tensor::empty(os, x.dtype(), x.device());
  Tensor indices = Tensor::empty(os, DType::I64, x.device());
  const int64_t lanes = lane_count(x, a);
  dispatch_dtype(x.dtype(), "topk", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (k == 0 || lanes == 0) return;
    const StridedIndexer<3> ix = lane_indexer<3>({&x, &values, &indices}, a);
    const int64_t xs = x.strides()[size_t(a)], vs = values.strides()[size_t(a)], is = indices.strides()[size_t(a)];
    cudaStream_t stream = compute_stream();
    if (k <= kSmallK)
      topk_thread_kernel<T><<<blocks_for(lanes), kThreads, 0, stream>>>(
          storage_ptr<T>(x), ix, lanes, n, xs, int(k), storage_ptr<T>(values), vs, storage_ptr<int64_t>(indices), is);
    else
      topk_rank_kernel<T><<<lane_blocks(lanes), lane_threads(n), 0, stream>>>(
          storage_ptr<T>(x), ix, lanes, n, xs, k, storage_ptr<T>(values), vs, storage_ptr<int64_t>(indices), is);
    STRATA_KERNEL_CHECK();
  });
  return {values, indices};
}

}  // namespace strata::cuda::reduce_impl

namespace strata::backend::cuda {

namespace impl = ::strata::cuda::reduce_impl;

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) { return impl::sum(x, axis, keepdim); }
Tensor mean(const Tensor& x, int64_t axis, bool keepdim) { return impl::mean(x, axis, keepdim); }
Tensor sum_all(const Tensor& x) { return impl::sum_all(x); }
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t axis, bool keepdim) { return impl::max(x, axis, keepdim); }
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) { return impl::max(x, axis, keepdim).second; }
Tensor cumsum(const Tensor& x, int64_t axis) { return impl::cumsum(x, axis); }
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t axis) { return impl::topk(x, k, axis); }

}  // namespace strata::backend::cuda
