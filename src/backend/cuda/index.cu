// GPU index ops (contract: strata/backend/index.h; CPU twin: src/backend/cpu/index.cpp).
//
// Every op walks the CPU's [outer, n, inner] iteration space (the dims before
// the indexed axis, the axis, the dims after it). An operand is addressed by a
// StridedIndexer over a shape whose row-major linear index is (o*A + j)*inner + k
// (A = that shape's size along the axis), so any view works without a copy.
//
// Index tensors first go through prepare_index: one kernel reads any strided
// i32/i64 index into a contiguous i64 copy and records out-of-range entries in
// a two-word device flag; it replaces them by the bound, which every later
// kernel skips, so no kernel touches memory outside a tensor. After the op's
// kernels are queued, check_range copies the flag back (the op's one host
// sync) and throws with the CPU's message: op, offending value, bound.
//
// The adding ops are deterministic without float atomics:
// - index_add and embedding_backward sort (index value, position) pairs with
//   CUB's stable radix sort; one thread per output element then sums the run
//   of equal values in position order, which is the CPU's summation order.
// - scatter_add (a different index per element) gives each (outer, inner)
//   column to one thread that walks the indexed axis serially, as the CPU does,
//   so no two threads ever touch the same element.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <string>

#include "strata/backend/cuda/index.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::backend::cuda {

namespace {

using ::strata::cuda::blocks_for;
using ::strata::cuda::compute_t;
using ::strata::cuda::kThreads;
using ::strata::cuda::load;
using ::strata::cuda::make_indexer;
using ::strata::cuda::storage_ptr;
using ::strata::cuda::store_cast;
using ::strata::cuda::StridedIndexer;

cudaStream_t stream() { return ::strata::cuda::compute_stream(); }

// Runs fn with an unsigned integer type of the dtype's size: the copying ops
// move bits and need no arithmetic, so they serve every dtype.
template <class Fn>
void dispatch_bits(DType dt, const char* op, Fn&& fn) {
  switch (dtype_size(dt)) {
    case 2: return fn(TypeTag<uint16_t>{});
    case 4: return fn(TypeTag<uint32_t>{});
    case 8: return fn(TypeTag<uint64_t>{});
    default: break;
  }
  STRATA_FAIL() << op << ": unsupported dtype " << dtype_name(dt);
}

int64_t prod(const Shape& s, size_t d0, size_t d1) {
  int64_t p = 1;
  for (size_t d = d0; d < d1; ++d) p *= s[d];
  return p;
}

// ---------------------------------------------------------------- index preparation

// An index tensor as contiguous i64 values (same shape); entries outside
// [0, bound) read `bound`. flags (i64 [2], device): [0] the smallest negative
// entry (0: none), [1] the largest entry >= bound (-1: none).
struct Prepared {
  Tensor values;
  Tensor flags;  // undefined when the index is empty
  int64_t bound = 0;
};

template <class I>
__global__ void prepare_index_kernel(const I* idx, StridedIndexer<1> ix, int64_t n, int64_t bound, int64_t* out,
                                     int64_t* flags) {
  STRATA_GRID_LOOP(i, n) {
    int64_t off[1];
    ix.offsets(i, off);
    int64_t v = int64_t(idx[off[0]]);
    if (v < 0) {
      atomicMin(reinterpret_cast<long long*>(flags), static_cast<long long>(v));
      v = bound;
    } else if (v >= bound) {
      atomicMax(reinterpret_cast<long long*>(flags + 1), static_cast<long long>(v));
      v = bound;
    }
    out[i] = v;
  }
}

void check_index_dtype(const Tensor& index, const char* op) { dispatch_index(index.dtype(), op, [](auto) {}); }

Prepared prepare_index(const Tensor& index, int64_t bound, const char* op) {
  check_index_dtype(index, op);
  Prepared p;
  p.bound = bound;
  p.values = Tensor::empty(index.shape(), DType::I64, index.device());
  const int64_t n = index.numel();
  if (n == 0) return p;
  p.flags = Tensor::empty({2}, DType::I64, index.device());
  int64_t* flags = storage_ptr<int64_t>(p.flags);
  STRATA_CUDA_CHECK(cudaMemsetAsync(flags, 0, sizeof(int64_t), stream()));
  STRATA_CUDA_CHECK(cudaMemsetAsync(flags + 1, 0xFF, sizeof(int64_t), stream()));  // -1
  const auto ix = make_indexer<1>({&index});
  dispatch_index(index.dtype(), op, [&](auto tag) {
    using I = typename decltype(tag)::type;
    prepare_index_kernel<I><<<blocks_for(n), kThreads, 0, stream()>>>(storage_ptr<const I>(index), ix, n, bound,
                                                                       storage_ptr<int64_t>(p.values), flags);
    STRATA_KERNEL_CHECK();
  });
  return p;
}

// Waits for the queued work and throws when prepare_index saw an entry out of
// range: the smallest when one is negative, else the largest (the CPU's choice).
void check_range(const Prepared& p, const char* op, const std::string& where) {
  if (!p.flags.defined()) return;
  int64_t h[2] = {0, -1};
  STRATA_CUDA_CHECK(cudaMemcpyAsync(h, storage_ptr<int64_t>(p.flags), sizeof(h), cudaMemcpyDeviceToHost, stream()));
  STRATA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  STRATA_CHECK(h[0] >= 0 && h[1] < 0) << op << ": index " << (h[0] < 0 ? h[0] : h[1]) << " out of range [0, "
                                      << p.bound << ") " << where;
}

std::string along(int64_t axis, const Tensor& x) { return "along axis " + std::to_string(axis) + " of " + x.str(); }

// ---------------------------------------------------------------- copying kernels

// out[o, j, k] = x[o, idx[j], k]; out contiguous [outer, n, inner], x of size xa along the axis.
template <class B>
__global__ void select_kernel(B* out, const B* x, StridedIndexer<1> xix, const int64_t* idx, int64_t outer, int64_t n,
                              int64_t inner, int64_t xa) {
  STRATA_GRID_LOOP(t, outer * n * inner) {
    const int64_t k = t % inner, j = (t / inner) % n, o = t / (inner * n);
    const int64_t v = idx[j];
    if (v >= xa) {  // out of range: the op throws after this kernel
      out[t] = B();
      continue;
    }
    int64_t off[1];
    xix.offsets((o * xa + v) * inner + k, off);
    out[t] = x[off[0]];
  }
}

void launch_select(const Tensor& out, const Tensor& x, const Prepared& p, int64_t outer, int64_t n, int64_t inner,
                   int64_t xa, const char* op) {
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  const auto xix = make_indexer<1>({&x});
  dispatch_bits(x.dtype(), op, [&](auto tag) {
    using B = typename decltype(tag)::type;
    select_kernel<B><<<blocks_for(total), kThreads, 0, stream()>>>(
        storage_ptr<B>(out), storage_ptr<const B>(x), xix, storage_ptr<const int64_t>(p.values), outer, n, inner, xa);
    STRATA_KERNEL_CHECK();
  });
}

// out[t] = x[o, idx[t], k] for t = (o, j, k) of the index's shape; xix walks
// x's storage over the index's shape, axis_stride is x's stride along the axis.
template <class B>
__global__ void gather_kernel(B* out, const B* x, StridedIndexer<1> xix, const int64_t* idx, int64_t total, int64_t n,
                              int64_t inner, int64_t axis_stride, int64_t bound) {
  STRATA_GRID_LOOP(t, total) {
    const int64_t v = idx[t];
    if (v >= bound) {
      out[t] = B();
      continue;
    }
    const int64_t k = t % inner, o = t / (inner * n);
    int64_t off[1];
    xix.offsets(o * n * inner + k, off);  // position (o, 0, k)
    out[t] = x[off[0] + v * axis_stride];
  }
}

// dst = src element by element (same shape, any strides).
template <class B>
__global__ void copy_kernel(B* dst, const B* src, StridedIndexer<2> ix, int64_t total) {
  STRATA_GRID_LOOP(t, total) {
    int64_t off[2];
    ix.offsets(t, off);
    dst[off[0]] = src[off[1]];
  }
}

// ---------------------------------------------------------------- adding kernels

// i64 0, 1, ..., n-1: the positions carried through the sort.
__global__ void iota_kernel(int64_t* out, int64_t n) {
  STRATA_GRID_LOOP(i, n) out[i] = i;
}

// Index values sorted ascending with their positions; equal values keep
// position order (the radix sort is stable).
struct Sorted {
  Tensor keys, pos;
};

Sorted sort_by_index(const Prepared& p) {
  const int64_t n = p.values.numel();
  const Device dev = p.values.device();
  Tensor pos_in = Tensor::empty({n}, DType::I64, dev);
  iota_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(storage_ptr<int64_t>(pos_in), n);
  STRATA_KERNEL_CHECK();
  Sorted s{Tensor::empty({n}, DType::I64, dev), Tensor::empty({n}, DType::I64, dev)};
  // values lie in [0, bound] (bound marks an invalid entry): sorting the low
  // bits that can hold `bound` is exact and skips the passes over zero bits
  int end_bit = 1;
  while (end_bit < 63 && (int64_t(1) << end_bit) <= p.bound) ++end_bit;
  const int64_t* kin = storage_ptr<const int64_t>(p.values);
  const int64_t* vin = storage_ptr<const int64_t>(pos_in);
  int64_t* kout = storage_ptr<int64_t>(s.keys);
  int64_t* vout = storage_ptr<int64_t>(s.pos);
  size_t bytes = 0;
  STRATA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, kin, kout, vin, vout, n, 0, end_bit, stream()));
  Tensor temp = Tensor::empty({int64_t(bytes / 8 + 1)}, DType::I64, dev);
  STRATA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(storage_ptr<void>(temp), bytes, kin, kout, vin, vout, n, 0,
                                                    end_bit, stream()));
  return s;
}

// out (contiguous [outer, bound, inner], zeroed) at (o, v, k) = sum of
// src (o, j, k) over the positions j whose index is v, in position order.
// Thread t = (o, p, k) of the sorted order does the sum when p starts a run of
// equal keys, so each output element has exactly one writer.
template <class T>
__global__ void run_sum_kernel(T* out, const T* src, StridedIndexer<1> six, const int64_t* keys, const int64_t* pos,
                               int64_t outer, int64_t n, int64_t inner, int64_t bound, int64_t skip) {
  STRATA_GRID_LOOP(t, outer * n * inner) {
    const int64_t k = t % inner, p = (t / inner) % n, o = t / (inner * n);
    const int64_t key = keys[p];
    if (key >= bound || key == skip || (p > 0 && keys[p - 1] == key)) continue;
    const int64_t row0 = o * n * inner + k;  // linear index of (o, 0, k) in src
    compute_t<T> acc = 0;
    for (int64_t q = p; q < n && keys[q] == key; ++q) {
      int64_t off[1];
      six.offsets(row0 + pos[q] * inner, off);
      acc += load(src + off[0]);
    }
    out[(o * bound + key) * inner + k] = store_cast<T>(acc);
  }
}

// out = zeros [outer, bound, inner] plus src summed at the prepared indices
// (entries equal to skip add nothing). src's shape is [outer.., n, inner..].
Tensor index_sum(const Shape& out_shape, const Tensor& src, const Prepared& p, int64_t outer, int64_t n,
                 int64_t inner, int64_t skip, const char* op) {
  Tensor out = Tensor::empty(out_shape, src.dtype(), src.device());
  if (out.numel() == 0) return out;
  STRATA_CUDA_CHECK(cudaMemsetAsync(storage_ptr<void>(out), 0, out.nbytes(), stream()));  // 0 in every dtype
  if (n == 0 || inner == 0) return out;
  const Sorted s = sort_by_index(p);
  const auto six = make_indexer<1>({&src});
  dispatch_dtype(src.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    run_sum_kernel<T><<<blocks_for(outer * n * inner), kThreads, 0, stream()>>>(
        storage_ptr<T>(out), storage_ptr<const T>(src), six, storage_ptr<const int64_t>(s.keys),
        storage_ptr<const int64_t>(s.pos), outer, n, inner, p.bound, skip);
    STRATA_KERNEL_CHECK();
  });
  return out;
}

// out[o, idx[o, j, k], k] += src[o, j, k] for j in order, one thread per (o, k)
// column of the index's shape. oix walks out over the index's shape (base 0);
// out_stride is out's stride along the axis. Each add rounds to T like the CPU's.
template <class T>
__global__ void scatter_add_kernel(T* out, StridedIndexer<1> oix, int64_t out_stride, const T* src,
                                   StridedIndexer<1> six, const int64_t* idx, int64_t outer, int64_t n, int64_t inner,
                                   int64_t bound) {
  STRATA_GRID_LOOP(c, outer * inner) {
    const int64_t k = c % inner, o = c / inner;
    const int64_t row0 = o * n * inner + k;
    int64_t ooff[1];
    oix.offsets(row0, ooff);  // (o, 0, k) of out
    for (int64_t j = 0; j < n; ++j) {
      const int64_t lin = row0 + j * inner;
      const int64_t v = idx[lin];
      if (v >= bound) continue;
      int64_t soff[1];
      six.offsets(lin, soff);
      T* d = out + ooff[0] + v * out_stride;
      *d = store_cast<T>(load(d) + load(src + soff[0]));
    }
  }
}

// index has x's rank and fits inside x in every dim but the indexed one.
void check_gather_shapes(const Tensor& x, int64_t a, const Tensor& index, const char* op) {
  bool ok = index.dim() == x.dim();
  for (int64_t d = 0; ok && d < x.dim(); ++d) ok = d == a || index.shape()[d] <= x.shape()[d];
  STRATA_CHECK(ok) << op << ": index " << index.str() << " does not fit " << x.str() << " along axis " << a
                   << " (same rank, no larger in the other dims)";
}

}  // namespace

// ---------------------------------------------------------------- embedding

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  STRATA_CHECK(weight.dim() == 2) << "embedding: weight must be 2-D [rows, dim], got " << weight.str();
  const int64_t V = weight.shape()[0], D = weight.shape()[1], n = ids.numel();
  const Prepared p = prepare_index(ids, V, "embedding");
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  launch_select(out, weight, p, 1, n, D, V, "embedding");
  check_range(p, "embedding", "(rows of weight " + weight.str() + ")");
  return out;
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_rows, int64_t padding_idx) {
  check_index_dtype(ids, "embedding_backward");
  const Shape expect = ids.shape();
  STRATA_CHECK(grad.dim() == ids.dim() + 1 && Shape(grad.shape().begin(), grad.shape().end() - 1) == expect)
      << "embedding_backward: gradient " << grad.str() << " does not match ids " << ids.str() << " (expected "
      << shape_str(expect) << " + [dim])";
  STRATA_CHECK(num_rows >= 0 && padding_idx < num_rows)
      << "embedding_backward: padding_idx " << padding_idx << " is not a row of a table with " << num_rows
      << " rows";
  const int64_t n = ids.numel(), D = grad.shape().back();
  const Prepared p = prepare_index(ids, num_rows, "embedding_backward");
  // grad [ids.., D] is the [1, n, D] space: position (0, j, k) has linear index j*D + k
  Tensor out = index_sum({num_rows, D}, grad, p, 1, n, D, padding_idx < 0 ? -1 : padding_idx, "embedding_backward");
  check_range(p, "embedding_backward", "(rows of the table)");
  return out;
}

// ---------------------------------------------------------------- index_select / index_add

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  const int64_t a = wrap_dim(axis, x.dim(), "index_select");
  STRATA_CHECK(index.dim() == 1) << "index_select: index must be 1-D, got " << index.str();
  const int64_t n = index.numel(), xa = x.shape()[size_t(a)];
  const Prepared p = prepare_index(index, xa, "index_select");
  Shape out_shape = x.shape();
  out_shape[size_t(a)] = n;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  launch_select(out, x, p, prod(x.shape(), 0, size_t(a)), n, prod(x.shape(), size_t(a) + 1, x.shape().size()), xa,
                "index_select");
  check_range(p, "index_select", along(a, x));
  return out;
}

Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& src) {
  const int64_t a = wrap_dim(axis, int64_t(shape.size()), "index_add");
  STRATA_CHECK(index.dim() == 1) << "index_add: index must be 1-D, got " << index.str();
  check_index_dtype(index, "index_add");
  const int64_t n = index.numel();
  Shape expect = shape;
  expect[size_t(a)] = n;
  STRATA_CHECK(src.shape() == expect) << "index_add: source " << src.str() << " does not match " << shape_str(expect)
                                      << " (output " << shape_str(shape) << " with " << n << " indices along axis "
                                      << a << ")";
  const Prepared p = prepare_index(index, shape[size_t(a)], "index_add");
  Tensor out = index_sum(shape, src, p, prod(shape, 0, size_t(a)), n, prod(shape, size_t(a) + 1, shape.size()), -1,
                         "index_add");
  check_range(p, "index_add", "along axis " + std::to_string(a) + " of " + shape_str(shape));
  return out;
}

// ---------------------------------------------------------------- gather / scatter_add

Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
  const int64_t a = wrap_dim(axis, x.dim(), "gather");
  check_gather_shapes(x, a, index, "gather");
  const int64_t xa = x.shape()[size_t(a)];
  const Prepared p = prepare_index(index, xa, "gather");
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  const int64_t total = out.numel();
  if (total > 0) {
    const int64_t n = index.shape()[size_t(a)], inner = prod(index.shape(), size_t(a) + 1, index.shape().size());
    // x's storage walked over the index's shape (index may be smaller than x in the other dims)
    const Tensor xv = make_view(x, index.shape(), x.strides(), x.offset());
    const auto xix = make_indexer<1>({&xv});
    dispatch_bits(x.dtype(), "gather", [&](auto tag) {
      using B = typename decltype(tag)::type;
      gather_kernel<B><<<blocks_for(total), kThreads, 0, stream()>>>(
          storage_ptr<B>(out), storage_ptr<const B>(x), xix, storage_ptr<const int64_t>(p.values), total, n, inner,
          x.strides()[size_t(a)], xa);
      STRATA_KERNEL_CHECK();
    });
  }
  check_range(p, "gather", along(a, x));
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src) {
  const int64_t a = wrap_dim(axis, x.dim(), "scatter_add");
  check_gather_shapes(x, a, index, "scatter_add");
  STRATA_CHECK(src.shape() == index.shape() && src.dtype() == x.dtype())
      << "scatter_add: source " << src.str() << " must have the index's shape " << shape_str(index.shape())
      << " and the dtype of " << x.str();
  const int64_t xa = x.shape()[size_t(a)];
  const Prepared p = prepare_index(index, xa, "scatter_add");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) {
    const auto cix = make_indexer<2>({&out, &x});
    dispatch_bits(x.dtype(), "scatter_add", [&](auto tag) {
      using B = typename decltype(tag)::type;
      copy_kernel<B><<<blocks_for(out.numel()), kThreads, 0, stream()>>>(storage_ptr<B>(out), storage_ptr<const B>(x),
                                                                        cix, out.numel());
      STRATA_KERNEL_CHECK();
    });
  }
  if (index.numel() > 0) {
    const int64_t n = index.shape()[size_t(a)];
    const int64_t inner = prod(index.shape(), size_t(a) + 1, index.shape().size());
    const int64_t outer = prod(index.shape(), 0, size_t(a));
    const Tensor ov = make_view(out, index.shape(), out.strides(), 0);
    const auto oix = make_indexer<1>({&ov});
    const auto six = make_indexer<1>({&src});
    dispatch_dtype(x.dtype(), "scatter_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      scatter_add_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream()>>>(
          storage_ptr<T>(out), oix, out.strides()[size_t(a)], storage_ptr<const T>(src), six,
          storage_ptr<const int64_t>(p.values), outer, n, inner, xa);
      STRATA_KERNEL_CHECK();
    });
  }
  check_range(p, "scatter_add", along(a, x));
  return out;
}

}  // namespace strata::backend::cuda
