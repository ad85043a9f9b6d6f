// CPU element-wise kernels. Every op maps a functor from strata/backend/functors.h
// over its (broadcast) operands into a new contiguous tensor. Two paths:
// operands that are contiguous with the output's shape run as one flat loop
// the compiler vectorises (split across threads when large); everything else
// goes through for_each_run after dropping size-1 dims and merging dims that
// are contiguous in every operand, so the inner runs stay long.
#include <array>
#include <type_traits>
#include <vector>

#include "strata/backend/elementwise.h"
#include "strata/backend/functors.h"
#include "strata/backend/op_functors.h"
#include "strata/backend/reduce.h"
#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/elementwise.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {

void require_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor " << t.str() << " needs the CUDA backend";
}

// Strides of t read at the broadcast shape `out` (0 on broadcast dims).
Strides broadcast_strides(const Tensor& t, const Shape& out) {
  Strides st(out.size(), 0);
  const size_t lead = out.size() - size_t(t.dim());
  for (size_t d = 0; d < size_t(t.dim()); ++d)
    st[lead + d] = t.shape()[d] == out[lead + d] ? t.strides()[d] : 0;
  return st;
}

// The same iteration space with size-1 dims dropped and neighbouring dims
// merged where every operand walks them as one (outer stride = inner stride * inner size).
template <size_t N>
struct Layout {
  Shape shape;
  std::array<Strides, N> strides;
  std::array<const int64_t*, N> ptrs() const {
    std::array<const int64_t*, N> p;
    for (size_t k = 0; k < N; ++k) p[k] = strides[k].data();
    return p;
  }
};

template <size_t N>
Layout<N> coalesce(const Shape& shape, const std::array<Strides, N>& strides) {
  Layout<N> l;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !l.shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = l.strides[k].back() == strides[k][d] * shape[d];
    if (merge) {
      l.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) l.strides[k].back() = strides[k][d];
    } else {
      l.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) l.strides[k].push_back(strides[k][d]);
    }
  }
  return l;
}

// fn(i0, i1) over [0, n), split in cache-line multiples across threads when large.
template <class Fn>
void parallel_chunks(int64_t n, Fn&& fn) {
  if (n < kParallelGrain) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel
  {
    int nt = 1, t = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    t = omp_get_thread_num();
#endif
    int64_t chunk = ((n + nt - 1) / nt + 15) / 16 * 16;
    int64_t i0 = t * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
    if (i0 < i1) fn(i0, i1);
  }
}

template <class T>
const T* base_ptr(const Tensor& t) {
  return static_cast<const T*>(t.impl().storage->data());
}

bool dense_as(const Tensor& t, const Shape& shape) { return t.shape() == shape && t.is_contiguous(); }

// out[i] = f(x[i]) for x of storage type A; out has storage type O.
template <class O, class A, class F>
Tensor map1(const Tensor& x, DType out_dtype, F f) {
  Tensor out = Tensor::empty(x.shape(), out_dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  if (x.is_contiguous()) {
    const A* p = x.data<A>();
    parallel_chunks(n, [&](int64_t i0, int64_t i1) {
      const F g = f;  // a local copy: its captures cannot alias the output
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) o[i] = g(p[i]);
    });
    return out;
  }
  const A* xb = base_ptr<A>(x);
  Layout<2> l = coalesce<2>(x.shape(), {out.strides(), x.strides()});
  for_each_run<2>(l.shape, l.ptrs(), {0, x.offset()}, [&](const StridedRun<2>& r) {
    const F g = f;
    O* op = o + r.offset[0];  // the output's innermost kept dim always has stride 1
    const A* xp = xb + r.offset[1];
    const int64_t s = r.stride[1];
    for (int64_t i = 0; i < r.length; ++i) op[i] = g(xp[i * s]);
  });
  return out;
}

// out[i] = f(a[i], b[i]) with a, b broadcast to `shape`.
template <class O, class A, class B, class F>
Tensor map2(const Tensor& a, const Tensor& b, const Shape& shape, DType out_dtype, F f) {
  Tensor out = Tensor::empty(shape, out_dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  if (dense_as(a, shape) && dense_as(b, shape)) {
    const A* pa = a.data<A>();
    const B* pb = b.data<B>();
    parallel_chunks(n, [&](int64_t i0, int64_t i1) {
      const F g = f;  // a local copy: its captures cannot alias the output
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) o[i] = g(pa[i], pb[i]);
    });
    return out;
  }
  if (dense_as(a, shape) && b.numel() == 1) {
    const A* pa = a.data<A>();
    const B vb = *static_cast<const B*>(b.raw_data());
    parallel_chunks(n, [&](int64_t i0, int64_t i1) {
      const F g = f;  // a local copy: its captures cannot alias the output
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) o[i] = g(pa[i], vb);
    });
    return out;
  }
  if (dense_as(b, shape) && a.numel() == 1) {
    const A va = *static_cast<const A*>(a.raw_data());
    const B* pb = b.data<B>();
    parallel_chunks(n, [&](int64_t i0, int64_t i1) {
      const F g = f;  // a local copy: its captures cannot alias the output
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) o[i] = g(va, pb[i]);
    });
    return out;
  }
  const A* ab = base_ptr<A>(a);
  const B* bb = base_ptr<B>(b);
  Layout<3> l = coalesce<3>(shape, {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape)});
  for_each_run<3>(l.shape, l.ptrs(), {0, a.offset(), b.offset()}, [&](const StridedRun<3>& r) {
    const F g = f;
    O* op = o + r.offset[0];
    const A* pa = ab + r.offset[1];
    const B* pb = bb + r.offset[2];
    const int64_t sa = r.stride[1], sb = r.stride[2], len = r.length;
    // The common broadcast patterns get loops the compiler can vectorise.
    if (sa == 1 && sb == 1) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) op[i] = g(pa[i], pb[i]);
    } else if (sa == 1 && sb == 0) {
      const B vb = *pb;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) op[i] = g(pa[i], vb);
    } else if (sa == 0 && sb == 1) {
      const A va = *pa;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) op[i] = g(va, pb[i]);
    } else {
      for (int64_t i = 0; i < len; ++i) op[i] = g(pa[i * sa], pb[i * sb]);
    }
  });
  return out;
}

// out[i] = f(a[i], b[i], c[i]) with all three broadcast to `shape`.
template <class O, class A, class B, class C, class F>
Tensor map3(const Tensor& a, const Tensor& b, const Tensor& c, const Shape& shape, DType out_dtype, F f) {
  Tensor out = Tensor::empty(shape, out_dtype);
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  if (dense_as(a, shape) && dense_as(b, shape) && dense_as(c, shape)) {
    const A* pa = a.data<A>();
    const B* pb = b.data<B>();
    const C* pc = c.data<C>();
    parallel_chunks(n, [&](int64_t i0, int64_t i1) {
      const F g = f;  // a local copy: its captures cannot alias the output
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) o[i] = g(pa[i], pb[i], pc[i]);
    });
    return out;
  }
  const A* ab = base_ptr<A>(a);
  const B* bb = base_ptr<B>(b);
  const C* cb = base_ptr<C>(c);
  Layout<4> l = coalesce<4>(shape, {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape),
                                    broadcast_strides(c, shape)});
  for_each_run<4>(l.shape, l.ptrs(), {0, a.offset(), b.offset(), c.offset()}, [&](const StridedRun<4>& r) {
    const F g = f;
    O* op = o + r.offset[0];
    const A* pa = ab + r.offset[1];
    const B* pb = bb + r.offset[2];
    const C* pc = cb + r.offset[3];
    const int64_t sa = r.stride[1], sb = r.stride[2], sc = r.stride[3], len = r.length;
    if (sa == 1 && sb == 1 && sc == 1) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) op[i] = g(pa[i], pb[i], pc[i]);
    } else {
      for (int64_t i = 0; i < len; ++i) op[i] = g(pa[i * sa], pb[i * sb], pc[i * sc]);
    }
  });
  return out;
}

// 1 or 0 in storage type T (also for f16/bf16 and integers).
template <class T>
T one_or_zero(bool c) {
  return from_compute<T>(c ? 1.0f : 0.0f);
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  STRATA_CHECK(a.dtype() == b.dtype()) << op << ": dtype mismatch between " << a.str() << " and " << b.str();
}

}  // namespace

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Rsqrt: return "rsqrt";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Square: return "square";
    case UnaryOp::Reciprocal: return "reciprocal";
  }
  return "unary";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
    case BinaryOp::Pow: return "pow";
  }
  return "binary";
}

Tensor unary(UnaryOp op, const Tensor& x) {
  const char* name = unary_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {x})) return cuda::unary(op, x);
#endif
  require_cpu(x, name);
  return dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_unary(op, [&](auto f) { return map1<T, T>(x, x.dtype(), [f](T v) { return f(v); }); });
  });
}

Tensor unary_backward(UnaryOp op, const Tensor& grad_y, const Tensor& x, const Tensor& y) {
  const char* name = unary_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {grad_y, x, y})) return cuda::unary_backward(op, grad_y, x, y);
#endif
  // Which saved tensor the derivative reads; the other may be undefined.
  const bool uses_x = op == UnaryOp::Log || op == UnaryOp::Relu || op == UnaryOp::Gelu || op == UnaryOp::Abs ||
                      op == UnaryOp::Square;
  const bool uses_y = !uses_x && op != UnaryOp::Neg;
  STRATA_CHECK(!uses_x || x.defined()) << name << "_backward: needs the input x";
  STRATA_CHECK(!uses_y || y.defined()) << name << "_backward: needs the output y";
  const Tensor& xs = uses_x ? x : grad_y;
  const Tensor& ys = uses_y ? y : grad_y;
  for (const Tensor* t : {&grad_y, &xs, &ys}) {
    require_cpu(*t, name);
    STRATA_CHECK(t->shape() == grad_y.shape() && t->dtype() == grad_y.dtype())
        << name << "_backward: gradient " << grad_y.str() << " does not match saved tensor " << t->str();
  }
  return dispatch_float(grad_y.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_unary_grad(op, [&](auto f) {
      return map3<T, T, T, T>(grad_y, xs, ys, grad_y.shape(), grad_y.dtype(),
                              [f](T g, T xv, T yv) { return f(g, xv, yv); });
    });
  });
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {a, b})) return cuda::binary(op, a, b);
#endif
  require_cpu(a, name);
  require_cpu(b, name);
  check_same_dtype(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  return dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_binary(op, [&](auto f) {
      return map2<T, T, T>(a, b, shape, a.dtype(), [f](T u, T v) { return f(u, v); });
    });
  });
}

Tensor binary_scalar(BinaryOp op, const Tensor& a, double s) {
  const char* name = binary_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {a})) return cuda::binary_scalar(op, a, s);
#endif
  require_cpu(a, name);
  return dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = T(s);
    if (op == BinaryOp::Pow && s == 2.0)  // x^2 (variances, norms) without the libm call
      return map1<T, T>(a, a.dtype(), [](T u) { return u * u; });
    return with_binary(op, [&](auto f) { return map1<T, T>(a, a.dtype(), [f, v](T u) { return f(u, v); }); });
  });
}

Tensor scalar_binary(BinaryOp op, double s, const Tensor& a) {
  const char* name = binary_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {a})) return cuda::scalar_binary(op, s, a);
#endif
  require_cpu(a, name);
  return dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = T(s);
    return with_binary(op, [&](auto f) { return map1<T, T>(a, a.dtype(), [f, v](T u) { return f(v, u); }); });
  });
}

Tensor compare(CompareOp op, const Tensor& a, const Tensor& b) {
  const char* name = compare_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {a, b})) return cuda::compare(op, a, b);
#endif
  require_cpu(a, name);
  require_cpu(b, name);
  check_same_dtype(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  return dispatch_dtype(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_compare(op, [&](auto f) {
      return map2<T, T, T>(a, b, shape, a.dtype(),
                           [f](T u, T v) { return one_or_zero<T>(f(to_compute(u), to_compute(v))); });
    });
  });
}

Tensor compare_scalar(CompareOp op, const Tensor& a, double s) {
  const char* name = compare_name(op);
#ifdef STRATA_WITH_CUDA
  if (on_cuda(name, {a})) return cuda::compare_scalar(op, a, s);
#endif
  require_cpu(a, name);
  return dispatch_dtype(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_compare(op, [&](auto f) {
      if constexpr (std::is_integral_v<T>) {
        // x < 0.5 on integers must not truncate the scalar: compare in double.
        return map1<T, T>(a, a.dtype(), [f, s](T u) { return one_or_zero<T>(f(double(u), s)); });
      } else {
        using C = decltype(to_compute(T()));
        const C v = C(s);
        return map1<T, T>(a, a.dtype(), [f, v](T u) { return one_or_zero<T>(f(to_compute(u), v)); });
      }
    });
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("where", {cond, a, b})) return cuda::where(cond, a, b);
#endif
  require_cpu(cond, "where");
  require_cpu(a, "where");
  require_cpu(b, "where");
  check_same_dtype(a, b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  return dispatch_dtype(cond.dtype(), "where", [&](auto ctag) {
    using C = typename decltype(ctag)::type;
    return dispatch_dtype(a.dtype(), "where", [&](auto tag) {
      using T = typename decltype(tag)::type;
      return map3<T, C, T, T>(cond, a, b, shape, a.dtype(), [](C c, T u, T v) { return to_compute(c) != 0 ? u : v; });
    });
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("masked_fill", {x, mask})) return cuda::masked_fill(x, mask, value);
#endif
  require_cpu(x, "masked_fill");
  require_cpu(mask, "masked_fill");
  STRATA_CHECK(mask.dim() <= x.dim() && broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape())
      << "masked_fill: mask " << shape_str(mask.shape()) << " does not broadcast to " << shape_str(x.shape());
  return dispatch_dtype(mask.dtype(), "masked_fill", [&](auto mtag) {
    using M = typename decltype(mtag)::type;
    return dispatch_dtype(x.dtype(), "masked_fill", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T v = from_compute<T>(value);
      return map2<T, T, M>(x, mask, x.shape(), x.dtype(), [v](T u, M m) { return to_compute(m) != 0 ? v : u; });
    });
  });
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("sum_to_shape", {g})) return cuda::sum_to_shape(g, shape);
#endif
  if (g.shape() == shape) return g;
  STRATA_CHECK(shape.size() <= size_t(g.dim()) && broadcast_shapes(shape, g.shape(), "sum_to_shape") == g.shape())
      << "sum_to_shape: " << shape_str(shape) << " does not broadcast to the gradient's " << shape_str(g.shape());
  require_cpu(g, "sum_to_shape");
  // Group g's dims into alternating runs of kept and summed dims (size-1 dims
  // of g join any run), so each run is one axis of a contiguous view and a few
  // single-axis sums do the whole reduction.
  const size_t lead = size_t(g.dim()) - shape.size();
  Shape grouped;
  std::vector<bool> summed;
  for (size_t d = 0; d < size_t(g.dim()); ++d) {
    const int64_t gs = g.shape()[d];
    if (gs == 1) continue;
    const bool s = d < lead || shape[d - lead] == 1;
    if (!grouped.empty() && summed.back() == s) {
      grouped.back() *= gs;
    } else {
      grouped.push_back(gs);
      summed.push_back(s);
    }
  }
  Tensor c = g.contiguous();
  Tensor t = make_view(c, grouped, contiguous_strides(grouped), c.offset());
  for (int64_t d = int64_t(grouped.size()) - 1; d >= 0; --d)
    if (summed[size_t(d)]) t = sum(t, d, /*keepdim=*/true);
  return make_view(t, shape, contiguous_strides(shape), t.offset());
}

}  // namespace strata::backend
