// Indexing ops: embedding, index_select, index_add, gather, scatter_add
// (concat and split live in concat.cpp).
//
// Every op iterates an [outer, n, inner] space: the dims before the indexed
// axis, the axis itself, the dims after it. Each strided operand is addressed
// through a Layout, tables of the storage offsets of its outer and inner
// positions, so any view works without a copy and the inner loop of a
// contiguous operand is a straight copy.
//
// The adding ops (index_add, scatter_add, embedding_backward) may hit one
// output element from several index entries, so they split the work over
// (outer, block of inner) positions and walk the indexed axis serially inside:
// no two threads ever touch the same element, and the summation order is fixed.
#include "strata/backend/index.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/index.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {

// Inner positions per task of the adding kernels.
constexpr int64_t kInnerBlock = 256;

void check_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor " << t.str() << " is on " << t.device().str()
                                    << " and needs the CUDA backend";
}

// Storage offsets (relative) of every position of dims [d0, d1) of `sizes`
// under `strides`, row-major.
std::vector<int64_t> dim_offsets(const Shape& sizes, const Strides& strides, int64_t d0, int64_t d1) {
  int64_t count = 1;
  for (int64_t d = d0; d < d1; ++d) count *= sizes[d];
  std::vector<int64_t> out(static_cast<size_t>(count));
  std::vector<int64_t> idx(size_t(d1 - d0), 0);
  int64_t off = 0;
  for (int64_t c = 0; c < count; ++c) {
    out[size_t(c)] = off;
    for (int64_t d = d1 - 1; d >= d0; --d) {
      if (++idx[size_t(d - d0)] < sizes[d]) {
        off += strides[d];
        break;
      }
      off -= (sizes[d] - 1) * strides[d];
      idx[size_t(d - d0)] = 0;
    }
  }
  return out;
}

// Addresses position (o, j, k) of an iteration space as
// base + outer[o] + j * axis_stride + inner[k] in one operand's storage.
struct Layout {
  int64_t base = 0;
  int64_t axis_stride = 0;
  std::vector<int64_t> outer, inner;
  bool inner_unit = true;  // inner[k] == k: the inner dims are one contiguous run
};

// `sizes` is the iteration space; it may be smaller than t's shape in any dim.
Layout make_layout(const Tensor& t, const Shape& sizes, int64_t axis) {
  Layout l;
  l.base = t.offset();
  l.axis_stride = t.strides()[axis];
  l.outer = dim_offsets(sizes, t.strides(), 0, axis);
  l.inner = dim_offsets(sizes, t.strides(), axis + 1, int64_t(sizes.size()));
  for (size_t k = 0; k < l.inner.size() && l.inner_unit; ++k) l.inner_unit = l.inner[k] == int64_t(k);
  return l;
}

// Throws naming the op and the first offending value when any of the n
// indices is outside [0, bound).
template <class I>
void check_range(const I* idx, int64_t n, int64_t bound, const char* op, const std::string& where) {
  I lo = std::numeric_limits<I>::max(), hi = std::numeric_limits<I>::lowest();
#pragma omp parallel for reduction(min : lo) reduction(max : hi) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, idx[i]);
    hi = std::max(hi, idx[i]);
  }
  if (n == 0) return;
  STRATA_CHECK(lo >= 0 && int64_t(hi) < bound)
      << op << ": index " << (lo < 0 ? int64_t(lo) : int64_t(hi)) << " out of range [0, " << bound << ") "
      << where;
}

std::string along(int64_t axis, const Tensor& x) {
  return "along axis " + std::to_string(axis) + " of " + x.str();
}

template <class T>
T* storage_ptr(const Tensor& t) {
  return static_cast<T*>(t.impl().storage->data());
}

// out[o, j, :] = x[o, index[j], :]   (out contiguous [outer, n, inner])
template <class T, class I>
void select_kernel(T* out, const T* x, const Layout& xl, const I* index, int64_t n) {
  const int64_t outer = int64_t(xl.outer.size()), inner = int64_t(xl.inner.size());
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner >= kParallelGrain)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < n; ++j) {
      T* dst = out + (o * n + j) * inner;
      const T* src = x + xl.base + xl.outer[o] + int64_t(index[j]) * xl.axis_stride;
      if (xl.inner_unit) {
        std::copy(src, src + inner, dst);
      } else {
        for (int64_t k = 0; k < inner; ++k) dst[k] = src[xl.inner[k]];
      }
    }
  }
}

// out[o, j, k] = x[o, index[o, j, k], k]   (out and index contiguous [outer, n, inner])
template <class T, class I>
void gather_kernel(T* out, const T* x, const Layout& xl, const I* index, int64_t n) {
  const int64_t outer = int64_t(xl.outer.size()), inner = int64_t(xl.inner.size());
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner >= kParallelGrain)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t row = (o * n + j) * inner;
      const T* src = x + xl.base + xl.outer[o];
      for (int64_t k = 0; k < inner; ++k)
        out[row + k] = src[int64_t(index[row + k]) * xl.axis_stride + xl.inner[k]];
    }
  }
}

template <class T>
T add(T a, T b) {
  return from_compute<T>(to_compute(a) + to_compute(b));
}

// out[o, v, k] += src[o, j, k] with v = index[j] (PerElement false) or
// v = index[o, j, k] (index contiguous over the [outer, n, inner] space of
// src). Entries equal to `skip` add nothing.
template <bool PerElement, class T, class I>
void add_kernel(T* out, const Layout& ol, const T* src, const Layout& sl, const I* index, int64_t n,
                int64_t skip) {
  const int64_t outer = int64_t(sl.outer.size()), inner = int64_t(sl.inner.size());
  const int64_t kblocks = (inner + kInnerBlock - 1) / kInnerBlock;
  const bool unit = ol.inner_unit && sl.inner_unit;
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner >= kParallelGrain)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t k0 = kb * kInnerBlock, k1 = std::min(inner, k0 + kInnerBlock);
      T* obase = out + ol.base + ol.outer[o];
      const T* sbase = src + sl.base + sl.outer[o];
      for (int64_t j = 0; j < n; ++j) {
        const T* s = sbase + j * sl.axis_stride;
        if constexpr (PerElement) {
          const I* ir = index + (o * n + j) * inner;
          for (int64_t k = k0; k < k1; ++k) {
            const int64_t v = int64_t(ir[k]);
            if (v == skip) continue;
            T& d = obase[v * ol.axis_stride + ol.inner[k]];
            d = add(d, s[sl.inner[k]]);
          }
        } else {
          const int64_t v = int64_t(index[j]);
          if (v == skip) continue;
          T* d = obase + v * ol.axis_stride;
          if (unit) {
            for (int64_t k = k0; k < k1; ++k) d[k] = add(d[k], s[k]);
          } else {
            for (int64_t k = k0; k < k1; ++k) d[ol.inner[k]] = add(d[ol.inner[k]], s[sl.inner[k]]);
          }
        }
      }
    }
  }
}

// A contiguous tensor viewed with another shape of the same size (no copy).
Tensor as_shape(const Tensor& t, const Shape& shape) {
  const Tensor c = t.contiguous();
  return make_view(c, shape, contiguous_strides(shape), c.offset());
}

// The entries of an index tensor as a contiguous tensor (validates the dtype).
Tensor index_values(const Tensor& index, const char* op) {
  check_cpu(index, op);
  dispatch_index(index.dtype(), op, [](auto) {});
  return index.contiguous();
}

}  // namespace

// ---------------------------------------------------------------- embedding

Tensor embedding(const Tensor& weight, const Tensor& ids) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("embedding", {weight, ids})) return cuda::embedding(weight, ids);
#endif
  check_cpu(weight, "embedding");
  STRATA_CHECK(weight.dim() == 2) << "embedding: weight must be 2-D [rows, dim], got " << weight.str();
  const Tensor idx = index_values(ids, "embedding");
  const int64_t n = idx.numel(), D = weight.shape()[1];
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  const Layout wl = make_layout(weight, Shape{n, D}, 0);  // rows of weight picked by ids
  dispatch_index(idx.dtype(), "embedding", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, n, weight.shape()[0], "embedding", "(rows of weight " + weight.str() + ")");
    dispatch_dtype(weight.dtype(), "embedding", [&](auto tag) {
      using T = typename decltype(tag)::type;
      select_kernel(out.data<T>(), storage_ptr<const T>(weight), wl, ip, n);
    });
  });
  return out;
}

Tensor embedding_backward(const Tensor& grad, const Tensor& ids, int64_t num_rows, int64_t padding_idx) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("embedding_backward", {grad, ids})) return cuda::embedding_backward(grad, ids, num_rows, padding_idx);
#endif
  check_cpu(grad, "embedding_backward");
  const Tensor idx = index_values(ids, "embedding_backward");
  Shape expect = ids.shape();
  STRATA_CHECK(grad.dim() == ids.dim() + 1 && Shape(grad.shape().begin(), grad.shape().end() - 1) == expect)
      << "embedding_backward: gradient " << grad.str() << " does not match ids " << ids.str() << " (expected "
      << shape_str(expect) << " + [dim])";
  STRATA_CHECK(num_rows >= 0 && padding_idx < num_rows)
      << "embedding_backward: padding_idx " << padding_idx << " is not a row of a table with " << num_rows
      << " rows";
  const int64_t n = idx.numel(), D = grad.shape().back();
  Tensor out = Tensor::zeros({num_rows, D}, grad.dtype());
  const Tensor g2 = as_shape(grad, {n, D});
  const Layout ol = make_layout(out, {n, D}, 0), gl = make_layout(g2, {n, D}, 0);
  dispatch_index(idx.dtype(), "embedding_backward", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, n, num_rows, "embedding_backward", "(rows of the table)");
    dispatch_dtype(grad.dtype(), "embedding_backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      // a negative padding_idx never equals a (checked, non-negative) index
      add_kernel<false>(out.data<T>(), ol, storage_ptr<const T>(g2), gl, ip, n, padding_idx < 0 ? -1 : padding_idx);
    });
  });
  return out;
}

// ---------------------------------------------------------------- index_select / index_add

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("index_select", {x, index})) return cuda::index_select(x, axis, index);
#endif
  check_cpu(x, "index_select");
  const int64_t a = wrap_dim(axis, x.dim(), "index_select");
  STRATA_CHECK(index.dim() == 1) << "index_select: index must be 1-D, got " << index.str();
  const Tensor idx = index_values(index, "index_select");
  const int64_t n = idx.numel();
  Shape out_shape = x.shape();
  out_shape[a] = n;
  Tensor out = Tensor::empty(out_shape, x.dtype());
  const Layout xl = make_layout(x, out_shape, a);
  dispatch_index(idx.dtype(), "index_select", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, n, x.shape()[a], "index_select", along(a, x));
    dispatch_dtype(x.dtype(), "index_select", [&](auto tag) {
      using T = typename decltype(tag)::type;
      select_kernel(out.data<T>(), storage_ptr<const T>(x), xl, ip, n);
    });
  });
  return out;
}

Tensor index_add(const Shape& shape, int64_t axis, const Tensor& index, const Tensor& src) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("index_add", {index, src})) return cuda::index_add(shape, axis, index, src);
#endif
  check_cpu(src, "index_add");
  const int64_t a = wrap_dim(axis, int64_t(shape.size()), "index_add");
  STRATA_CHECK(index.dim() == 1) << "index_add: index must be 1-D, got " << index.str();
  const Tensor idx = index_values(index, "index_add");
  const int64_t n = idx.numel();
  Shape expect = shape;
  expect[a] = n;
  STRATA_CHECK(src.shape() == expect) << "index_add: source " << src.str() << " does not match " << shape_str(expect)
                                      << " (output " << shape_str(shape) << " with " << n << " indices along axis "
                                      << a << ")";
  Tensor out = Tensor::zeros(shape, src.dtype());
  const Layout ol = make_layout(out, expect, a), sl = make_layout(src, expect, a);
  dispatch_index(idx.dtype(), "index_add", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, n, shape[a], "index_add", "along axis " + std::to_string(a) + " of " + shape_str(shape));
    dispatch_dtype(src.dtype(), "index_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      add_kernel<false>(out.data<T>(), ol, storage_ptr<const T>(src), sl, ip, n, -1);
    });
  });
  return out;
}

// ---------------------------------------------------------------- gather / scatter_add

namespace {
// index has x's rank and fits inside x in every dim but the indexed one.
void check_gather_shapes(const Tensor& x, int64_t a, const Tensor& index, const char* op) {
  bool ok = index.dim() == x.dim();
  for (int64_t d = 0; ok && d < x.dim(); ++d) ok = d == a || index.shape()[d] <= x.shape()[d];
  STRATA_CHECK(ok) << op << ": index " << index.str() << " does not fit " << x.str() << " along axis " << a
                   << " (same rank, no larger in the other dims)";
}
}  // namespace

Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("gather", {x, index})) return cuda::gather(x, axis, index);
#endif
  check_cpu(x, "gather");
  const int64_t a = wrap_dim(axis, x.dim(), "gather");
  check_gather_shapes(x, a, index, "gather");
  const Tensor idx = index_values(index, "gather");
  Tensor out = Tensor::empty(index.shape(), x.dtype());
  const Layout xl = make_layout(x, index.shape(), a);
  dispatch_index(idx.dtype(), "gather", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, idx.numel(), x.shape()[a], "gather", along(a, x));
    dispatch_dtype(x.dtype(), "gather", [&](auto tag) {
      using T = typename decltype(tag)::type;
      gather_kernel(out.data<T>(), storage_ptr<const T>(x), xl, ip, index.shape()[a]);
    });
  });
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("scatter_add", {x, index, src})) return cuda::scatter_add(x, axis, index, src);
#endif
  check_cpu(x, "scatter_add");
  check_cpu(src, "scatter_add");
  const int64_t a = wrap_dim(axis, x.dim(), "scatter_add");
  check_gather_shapes(x, a, index, "scatter_add");
  STRATA_CHECK(src.shape() == index.shape() && src.dtype() == x.dtype())
      << "scatter_add: source " << src.str() << " must have the index's shape " << shape_str(index.shape())
      << " and the dtype of " << x.str();
  const Tensor idx = index_values(index, "scatter_add");
  Tensor out = x.clone();
  const Layout ol = make_layout(out, index.shape(), a), sl = make_layout(src, index.shape(), a);
  dispatch_index(idx.dtype(), "scatter_add", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* ip = idx.data<I>();
    check_range(ip, idx.numel(), x.shape()[a], "scatter_add", along(a, x));
    dispatch_dtype(x.dtype(), "scatter_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      add_kernel<true>(out.data<T>(), ol, storage_ptr<const T>(src), sl, ip, index.shape()[a], -1);
    });
  });
  return out;
}

}  // namespace strata::backend
