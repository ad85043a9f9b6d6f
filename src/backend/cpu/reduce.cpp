// CPU reductions over one axis, prefix sums and top-k. The input is read as a
// contiguous [outer, n, inner] block (n = the reduced axis). With inner == 1
// (the last axis) each output is one tight loop over n contiguous elements;
// otherwise tiles of up to kTile neighbouring outputs walk the n rows
// together so every read is contiguous. Float sums accumulate in double.
#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "strata/backend/reduce.h"
#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/reduce.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {

constexpr int64_t kTile = 256;

void require_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor " << t.str() << " needs the CUDA backend";
}

struct AxisLayout {
  int64_t axis, outer = 1, n, inner = 1;
};

AxisLayout axis_layout(const Tensor& x, int64_t axis, const char* op) {
  AxisLayout l;
  l.axis = wrap_dim(axis, x.dim(), op);
  for (int64_t d = 0; d < l.axis; ++d) l.outer *= x.shape()[d];
  l.n = x.shape()[l.axis];
  for (int64_t d = l.axis + 1; d < x.dim(); ++d) l.inner *= x.shape()[d];
  return l;
}

Shape reduced_shape(const Shape& s, int64_t axis, bool keepdim) {
  Shape r = s;
  if (keepdim) r[axis] = 1;
  else r.erase(r.begin() + axis);
  return r;
}

// fn(o, i0, i1) computes outputs [o, i0:i1] from input [o, :, i0:i1]; the
// tiles are split across threads when the whole reduction is large.
template <class Fn>
void for_each_tile(const AxisLayout& l, Fn&& fn) {
  const int64_t per_row = (l.inner + kTile - 1) / kTile;
  const int64_t items = l.outer * per_row;
  const bool par = l.outer * l.n * l.inner >= kParallelGrain && items > 1;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t o = it / per_row, i0 = (it % per_row) * kTile;
    fn(o, i0, std::min(l.inner, i0 + kTile));
  }
}

// Accumulator of a sum/prefix sum: double for floating types, int64 for integers.
template <class T>
using AccOf = std::conditional_t<std::is_integral_v<T>, int64_t, double>;

template <class T>
Tensor sum_impl(const Tensor& xin, int64_t axis, bool keepdim, bool average, const char* op) {
  Tensor x = xin.contiguous();
  const AxisLayout l = axis_layout(x, axis, op);
  Tensor out = Tensor::empty(reduced_shape(x.shape(), l.axis, keepdim), x.dtype());
  using Acc = AccOf<T>;
  const double scale = average ? 1.0 / double(l.n) : 1.0;  // mean over 0 elements is NaN, as in numpy
  const T* xp = x.data<T>();
  T* op_ = out.data<T>();
  auto finish = [&](Acc a) { return average ? from_compute<T>(double(a) * scale) : from_compute<T>(a); };
  for_each_tile(l, [&](int64_t o, int64_t i0, int64_t i1) {
    const T* base = xp + o * l.n * l.inner;
    if (l.inner == 1) {
      Acc acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < l.n; ++j) acc += Acc(to_compute(base[j]));
      op_[o] = finish(acc);
      return;
    }
    Acc acc[kTile];
    const int64_t w = i1 - i0;
    for (int64_t i = 0; i < w; ++i) acc[i] = 0;
    for (int64_t j = 0; j < l.n; ++j) {
      const T* row = base + j * l.inner + i0;
      for (int64_t i = 0; i < w; ++i) acc[i] += Acc(to_compute(row[i]));
    }
    T* dst = op_ + o * l.inner + i0;
    for (int64_t i = 0; i < w; ++i) dst[i] = finish(acc[i]);
  });
  return out;
}

// Comparison keys for max/top-k: NaN ranks above everything (as in PyTorch).
template <class C>
bool is_nan(C v) {
  return v != v;
}
template <class C>
bool greater(C a, C b) {
  return a > b || (is_nan(a) && !is_nan(b));
}

}  // namespace

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("sum", {x})) return cuda::sum(x, axis, keepdim);
#endif
  require_cpu(x, "sum");
  return dispatch_dtype(x.dtype(), "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return sum_impl<T>(x, axis, keepdim, false, "sum");
  });
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("mean", {x})) return cuda::mean(x, axis, keepdim);
#endif
  require_cpu(x, "mean");
  STRATA_CHECK(is_floating(x.dtype())) << "mean: expected a floating tensor, got " << x.str();
  return dispatch_dtype(x.dtype(), "mean", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return sum_impl<T>(x, axis, keepdim, true, "mean");
  });
}

Tensor sum_all(const Tensor& xin) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("sum_all", {xin})) return cuda::sum_all(xin);
#endif
  require_cpu(xin, "sum_all");
  Tensor x = xin.contiguous();
  return dispatch_dtype(x.dtype(), "sum_all", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0;
#pragma omp parallel for simd reduction(+ : acc) schedule(static) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) acc += double(to_compute(p[i]));
    return Tensor::scalar(acc, x.dtype());
  });
}

std::pair<Tensor, Tensor> max(const Tensor& xin, int64_t axis, bool keepdim) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("max", {xin})) return cuda::max(xin, axis, keepdim);
#endif
  require_cpu(xin, "max");
  Tensor x = xin.contiguous();
  const AxisLayout l = axis_layout(x, axis, "max");
  STRATA_CHECK(l.n > 0) << "max: cannot reduce axis " << axis << " of size 0 in " << shape_str(x.shape());
  const Shape rs = reduced_shape(x.shape(), l.axis, keepdim);
  Tensor values = Tensor::empty(rs, x.dtype());
  Tensor indices = Tensor::empty(rs, DType::I64);
  dispatch_dtype(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = decltype(to_compute(T()));
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
    for_each_tile(l, [&](int64_t o, int64_t i0, int64_t i1) {
      const T* base = xp + o * l.n * l.inner;
      // strict `greater` keeps the first maximum; the first NaN wins over numbers
      if (l.inner == 1) {
        if constexpr (std::is_same_v<T, C>) {
          // Index tracking does not vectorise: take the maximum with a
          // vectorised pass, then find its first position (or the first NaN).
          T m = base[0];
          int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
          for (int64_t j = 0; j < l.n; ++j) {
            m = base[j] > m ? base[j] : m;
            nan |= base[j] != base[j];
          }
          int64_t bi = 0;
          if (nan)
            while (!is_nan(base[bi])) ++bi;
          else
            while (base[bi] != m) ++bi;
          vp[o] = base[bi];
          ip[o] = bi;
          return;
        } else {
          C best = to_compute(base[0]);
          int64_t bi = 0;
          for (int64_t j = 1; j < l.n; ++j) {
            C v = to_compute(base[j]);
            if (greater(v, best)) best = v, bi = j;
          }
          vp[o] = from_compute<T>(best);
          ip[o] = bi;
          return;
        }
      }
      C best[kTile];
      int64_t bi[kTile];
      const int64_t w = i1 - i0;
      for (int64_t i = 0; i < w; ++i) best[i] = to_compute(base[i0 + i]), bi[i] = 0;
      for (int64_t j = 1; j < l.n; ++j) {
        const T* row = base + j * l.inner + i0;
        for (int64_t i = 0; i < w; ++i) {
          C v = to_compute(row[i]);
          if (greater(v, best[i])) best[i] = v, bi[i] = j;
        }
      }
      for (int64_t i = 0; i < w; ++i) {
        vp[o * l.inner + i0 + i] = from_compute<T>(best[i]);
        ip[o * l.inner + i0 + i] = bi[i];
      }
    });
  });
  return {values, indices};
}

Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) { return max(x, axis, keepdim).second; }

Tensor cumsum(const Tensor& xin, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("cumsum", {xin})) return cuda::cumsum(xin, axis);
#endif
  require_cpu(xin, "cumsum");
  Tensor x = xin.contiguous();
  const AxisLayout l = axis_layout(x, axis, "cumsum");
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  dispatch_dtype(x.dtype(), "cumsum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = AccOf<T>;
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
    for_each_tile(l, [&](int64_t o, int64_t i0, int64_t i1) {
      const T* src = xp + o * l.n * l.inner;
      T* dst = yp + o * l.n * l.inner;
      if (l.inner == 1) {
        Acc acc = 0;
        for (int64_t j = 0; j < l.n; ++j) {
          acc += Acc(to_compute(src[j]));
          dst[j] = from_compute<T>(acc);
        }
        return;
      }
      Acc acc[kTile];
      const int64_t w = i1 - i0;
      for (int64_t i = 0; i < w; ++i) acc[i] = 0;
      for (int64_t j = 0; j < l.n; ++j) {
        const int64_t r = j * l.inner + i0;
        for (int64_t i = 0; i < w; ++i) {
          acc[i] += Acc(to_compute(src[r + i]));
          dst[r + i] = from_compute<T>(acc[i]);
        }
      }
    });
  });
  return out;
}

std::pair<Tensor, Tensor> topk(const Tensor& xin, int64_t k, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("topk", {xin})) return cuda::topk(xin, k, axis);
#endif
  require_cpu(xin, "topk");
  Tensor x = xin.contiguous();
  const AxisLayout l = axis_layout(x, axis, "topk");
  STRATA_CHECK(k >= 0 && k <= l.n) << "topk: k=" << k << " out of range for axis " << axis << " of size " << l.n
                                   << " in " << shape_str(x.shape());
  Shape os = x.shape();
  os[l.axis] = k;
  Tensor values = Tensor::empty(os, x.dtype());
  Tensor indices = Tensor::empty(os, DType::I64);
  const int64_t rows = l.outer * l.inner;
  if (k == 0 || rows == 0) return {values, indices};
  dispatch_dtype(x.dtype(), "topk", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = decltype(to_compute(T()));
    const T* xp = x.data<T>();
    T* vp = values.data<T>();
    int64_t* ip = indices.data<int64_t>();
#pragma omp parallel if (x.numel() >= kParallelGrain && rows > 1)
    {
      std::vector<C> vals(size_t(l.n));
      std::vector<int64_t> idx(size_t(l.n));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t o = r / l.inner, i = r % l.inner;
        const T* src = xp + o * l.n * l.inner + i;
        for (int64_t j = 0; j < l.n; ++j) vals[size_t(j)] = to_compute(src[j * l.inner]);
        std::iota(idx.begin(), idx.end(), int64_t(0));
        // descending by value, ties by lower index: a strict weak order, so the
        // result does not depend on the sort's stability
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
          C va = vals[size_t(a)], vb = vals[size_t(b)];
          if (greater(va, vb)) return true;
          if (greater(vb, va)) return false;
          return a < b;
        });
        const int64_t dst = o * k * l.inner + i;
        for (int64_t j = 0; j < k; ++j) {
          vp[dst + j * l.inner] = from_compute<T>(vals[size_t(idx[size_t(j)])]);
          ip[dst + j * l.inner] = idx[size_t(j)];
        }
      }
    }
  });
  return {values, indices};
}

}  // namespace strata::backend
