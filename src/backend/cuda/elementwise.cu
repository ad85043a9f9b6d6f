// GPU element-wise ops. Each op maps a functor from strata/backend/functors.h
// (the same definitions the CPU kernels use) over its operands, viewed at the
// broadcast output shape with stride 0 on broadcast dims, into a new
// contiguous tensor. Two kernel shapes per arity: a flat loop when every
// operand is contiguous at the output's shape, and a StridedIndexer loop
// otherwise (the indexer merges dims, so broadcasts of a scalar or of a
// trailing vector stay one or two dims deep). f16/bf16 are widened to f32 by
// load(), computed there and rounded once by store_cast().
#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "strata/backend/cuda/elementwise.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/backend/functors.h"
#include "strata/backend/op_functors.h"
#include "strata/core/dispatch.h"

namespace strata::cuda {
namespace {

template <class T>
__device__ __forceinline__ compute_t<T> widen(T v) {
  return load(&v);
}

// 1 or 0 in storage type T, converted as the CPU's one_or_zero does.
template <class T>
__device__ __forceinline__ T one_or_zero(bool c) {
  return store_cast<T>(c ? 1.0f : 0.0f);
}

#define STRATA_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

// ---------------------------------------------------------------- generic kernels
// The output is always a fresh contiguous tensor, so it never aliases an input.

template <class O, class A, class F>
__global__ void map1_flat(O* __restrict__ o, const A* a, int64_t n, F f) {
  STRATA_GRID_STRIDE(i, n) o[i] = f(a[i]);
}
template <class O, class A, class F>
__global__ void map1_strided(O* __restrict__ o, const A* a, StridedIndexer<1> ix, int64_t n, F f) {
  STRATA_GRID_STRIDE(i, n) {
    int64_t off[1];
    ix.offsets(i, off);
    o[i] = f(a[off[0]]);
  }
}

template <class O, class A, class B, class F>
__global__ void map2_flat(O* __restrict__ o, const A* a, const B* b, int64_t n, F f) {
  STRATA_GRID_STRIDE(i, n) o[i] = f(a[i], b[i]);
}
template <class O, class A, class B, class F>
__global__ void map2_strided(O* __restrict__ o, const A* a, const B* b, StridedIndexer<2> ix, int64_t n, F f) {
  STRATA_GRID_STRIDE(i, n) {
    int64_t off[2];
    ix.offsets(i, off);
    o[i] = f(a[off[0]], b[off[1]]);
  }
}

template <class O, class A, class B, class C, class F>
__global__ void map3_flat(O* __restrict__ o, const A* a, const B* b, const C* c, int64_t n, F f) {
  STRATA_GRID_STRIDE(i, n) o[i] = f(a[i], b[i], c[i]);
}
template <class O, class A, class B, class C, class F>
__global__ void map3_strided(O* __restrict__ o, const A* a, const B* b, const C* c, StridedIndexer<3> ix, int64_t n,
                             F f) {
  STRATA_GRID_STRIDE(i, n) {
    int64_t off[3];
    ix.offsets(i, off);
    o[i] = f(a[off[0]], b[off[1]], c[off[2]]);
  }
}

// ---------------------------------------------------------------- host launchers

// t read at the broadcast shape `shape` (stride 0 on broadcast dims), as the
// CPU's broadcast_strides does.
Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  Strides st(shape.size(), 0);
  const size_t lead = shape.size() - size_t(t.dim());
  for (size_t d = 0; d < size_t(t.dim()); ++d)
    st[lead + d] = t.shape()[d] == shape[lead + d] ? t.strides()[d] : 0;
  return make_view(t, shape, st, t.offset());
}

template <class T>
const T* flat_ptr(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}

template <class O, class A, class F>
Tensor map1(const Tensor& a, DType out_dtype, F f) {
  Tensor out = Tensor::empty(a.shape(), out_dtype, a.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  if (a.is_contiguous())
    map1_flat<O, A, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(o, flat_ptr<A>(a), n, f);
  else
    map1_strided<O, A, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(o, storage_ptr<A>(a),
                                                                            make_indexer<1>({&a}), n, f);
  STRATA_KERNEL_CHECK();
  return out;
}

template <class O, class A, class B, class F>
Tensor map2(const Tensor& a_in, const Tensor& b_in, const Shape& shape, DType out_dtype, F f) {
  Tensor out = Tensor::empty(shape, out_dtype, a_in.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  const Tensor a = broadcast_view(a_in, shape), b = broadcast_view(b_in, shape);
  if (a.is_contiguous() && b.is_contiguous())
    map2_flat<O, A, B, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(o, flat_ptr<A>(a), flat_ptr<B>(b), n, f);
  else
    map2_strided<O, A, B, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
        o, storage_ptr<A>(a), storage_ptr<B>(b), make_indexer<2>({&a, &b}), n, f);
  STRATA_KERNEL_CHECK();
  return out;
}

template <class O, class A, class B, class C, class F>
Tensor map3(const Tensor& a_in, const Tensor& b_in, const Tensor& c_in, const Shape& shape, DType out_dtype, F f) {
  Tensor out = Tensor::empty(shape, out_dtype, a_in.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  O* o = out.data<O>();
  const Tensor a = broadcast_view(a_in, shape), b = broadcast_view(b_in, shape), c = broadcast_view(c_in, shape);
  if (a.is_contiguous() && b.is_contiguous() && c.is_contiguous())
    map3_flat<O, A, B, C, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(o, flat_ptr<A>(a), flat_ptr<B>(b),
                                                                               flat_ptr<C>(c), n, f);
  else
    map3_strided<O, A, B, C, F><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
        o, storage_ptr<A>(a), storage_ptr<B>(b), storage_ptr<C>(c), make_indexer<3>({&a, &b, &c}), n, f);
  STRATA_KERNEL_CHECK();
  return out;
}

// ---------------------------------------------------------------- per-element adaptors
// Storage values in, storage value out; the functor sees compute-type values.

template <class T, class F>
struct UnaryFn {
  F f;
  __device__ __forceinline__ T operator()(T x) const { return store_cast<T>(f(widen(x))); }
};
template <class T, class F>
struct UnaryGradFn {
  F f;
  __device__ __forceinline__ T operator()(T g, T x, T y) const {
    return store_cast<T>(f(widen(g), widen(x), widen(y)));
  }
};
template <class T, class F>
struct BinaryFn {
  F f;
  __device__ __forceinline__ T operator()(T a, T b) const { return store_cast<T>(f(widen(a), widen(b))); }
};
template <class T, class F>
struct RightScalarFn {  // a op s
  F f;
  compute_t<T> s;
  __device__ __forceinline__ T operator()(T a) const { return store_cast<T>(f(widen(a), s)); }
};
template <class T, class F>
struct LeftScalarFn {  // s op a
  F f;
  compute_t<T> s;
  __device__ __forceinline__ T operator()(T a) const { return store_cast<T>(f(s, widen(a))); }
};
template <class T, class F>
struct CompareFn {
  F f;
  __device__ __forceinline__ T operator()(T a, T b) const { return one_or_zero<T>(f(widen(a), widen(b))); }
};
// S is double for integer T (x < 0.5 must not truncate the scalar), else compute_t<T>.
template <class T, class F, class S>
struct CompareScalarFn {
  F f;
  S s;
  __device__ __forceinline__ T operator()(T a) const { return one_or_zero<T>(f(S(widen(a)), s)); }
};
template <class C, class T>
struct WhereFn {
  __device__ __forceinline__ T operator()(C c, T u, T v) const { return widen(c) != 0 ? u : v; }
};
template <class T, class M>
struct MaskedFillFn {
  T v;
  __device__ __forceinline__ T operator()(T u, M m) const { return widen(m) != 0 ? v : u; }
};

// ---------------------------------------------------------------- op -> functor

using backend::compare_name;
using backend::with_binary;
using backend::with_compare;
using backend::with_unary;
using backend::with_unary_grad;

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  STRATA_CHECK(a.dtype() == b.dtype()) << op << ": dtype mismatch between " << a.str() << " and " << b.str();
}

// Every defined tensor on the first one's GPU (the CPU entry points check this
// through on_cuda; repeated here for direct callers).
void check_gpu(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) first = t;
    STRATA_CHECK(t->device().is_cuda() && t->device() == first->device())
        << op << ": tensors on different devices (" << first->str() << " and " << t->str() << ")";
  }
}

// ---------------------------------------------------------------- sum_to_shape
// g's non-size-1 dims split into kept dims (the output's, in order) and summed
// dims; each list's neighbours merge when g walks them as one. A block has
// bx (<= 32) lanes over consecutive outputs and by = 256 / bx rows over the
// summed elements, so a reduction to a few outputs still fills the block;
// large reductions are split over gridDim.y chunks whose f64 partial sums a
// second kernel adds in a fixed order (no atomics: results are reproducible).

struct Axes {
  std::vector<int64_t> size, stride;  // outermost first
  void push(int64_t n, int64_t st) {
    if (!size.empty() && stride.back() == st * n) {  // the previous axis steps over this one exactly
      size.back() *= n;
      stride.back() = st;
      return;
    }
    size.push_back(n);
    stride.push_back(st);
  }
};

// Indexer over the first `count` axes of a (row-major linear index -> offset).
StridedIndexer<1> axes_indexer(const Axes& a, size_t count, int64_t base) {
  STRATA_CHECK(count <= size_t(kMaxDims)) << "sum_to_shape: more than " << kMaxDims
                                          << " non-mergeable dims are not supported on the GPU";
  StridedIndexer<1> ix;
  ix.ndim = int(count);
  for (size_t d = 0; d < count; ++d) {
    ix.shape[d] = a.size[d];
    ix.stride[0][d] = a.stride[d];
  }
  ix.base[0] = base;
  return ix;
}

// Output o, chunk blockIdx.y: sums g[kept(o) + red_outer(q) + j * inner_stride]
// over r = q * inner_n + j in [blockIdx.y * chunk, (blockIdx.y + 1) * chunk).
// Writes out[o] when partial is null, else partial[blockIdx.y * n_out + o].
template <class T>
__global__ void sum_to_shape_kernel(T* out, double* partial, const T* g, StridedIndexer<1> kept,
                                    StridedIndexer<1> red_outer, int64_t inner_n, int64_t inner_stride,
                                    int64_t n_out, int64_t n_red, int64_t chunk) {
  __shared__ double sh[kThreads];
  const int tx = int(threadIdx.x), ty = int(threadIdx.y), bx = int(blockDim.x), by = int(blockDim.y);
  const int64_t o = int64_t(blockIdx.x) * bx + tx;
  const int64_t r_begin = int64_t(blockIdx.y) * chunk;
  const int64_t r_end = n_red < r_begin + chunk ? n_red : r_begin + chunk;
  double acc = 0;
  if (o < n_out) {
    int64_t off[1];
    kept.offsets(o, off);
    const T* base = g + off[0];
    int64_t r = r_begin + ty;
    if (r < r_end) {
      // (q, j) follow r incrementally; a division only when j wraps.
      int64_t q = r / inner_n, j = r - q * inner_n;
      red_outer.offsets(q, off);
      int64_t qoff = off[0];
      for (; r < r_end; r += by) {
        acc += double(load(base + qoff + j * inner_stride));
        j += by;
        if (j >= inner_n) {
          const int64_t carry = j / inner_n;
          j -= carry * inner_n;
          q += carry;
          red_outer.offsets(q, off);
          qoff = off[0];
        }
      }
    }
  }
  // Tree over the by rows (a power of two); every thread takes part in the barriers.
  sh[ty * bx + tx] = acc;
  for (int s = by / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (ty < s) sh[ty * bx + tx] += sh[(ty + s) * bx + tx];
  }
  if (ty == 0 && o < n_out) {
    if (partial) partial[int64_t(blockIdx.y) * n_out + o] = sh[tx];
    else out[o] = store_cast<T>(sh[tx]);
  }
}

template <class T>
__global__ void sum_partials_kernel(T* __restrict__ out, const double* partial, int64_t n_out, int64_t splits) {
  STRATA_GRID_STRIDE(o, n_out) {
    double acc = 0;
    for (int64_t s = 0; s < splits; ++s) acc += partial[s * n_out + o];
    out[o] = store_cast<T>(acc);
  }
}

template <class T>
Tensor sum_to_shape_impl(const Tensor& g, const Shape& shape) {
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  const int64_t n_out = out.numel();
  if (n_out == 0) return out;
  Axes kept, red;
  const size_t lead = size_t(g.dim()) - shape.size();
  for (size_t d = 0; d < size_t(g.dim()); ++d) {
    const int64_t n = g.shape()[d];
    if (n == 1) continue;
    const bool summed = d < lead || shape[d - lead] == 1;
    (summed ? red : kept).push(n, g.strides()[d]);
  }
  int64_t n_red = 1;
  for (int64_t n : red.size) n_red *= n;
  if (n_red == 0) {  // a sum over nothing is 0 (all-zero bits in every float dtype)
    STRATA_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), compute_stream()));
    return out;
  }
  const StridedIndexer<1> kept_ix = axes_indexer(kept, kept.size.size(), g.offset());
  const size_t nr = red.size.size();
  const StridedIndexer<1> red_outer = axes_indexer(red, nr == 0 ? 0 : nr - 1, 0);
  const int64_t inner_n = nr == 0 ? 1 : red.size.back();
  const int64_t inner_stride = nr == 0 ? 0 : red.stride.back();

  int bx = 1;
  while (bx < 32 && bx < n_out) bx *= 2;
  const int by = kThreads / bx;
  const int64_t grid_x = (n_out + bx - 1) / bx;
  STRATA_CHECK(grid_x <= int64_t(0x7fffffff)) << "sum_to_shape: " << n_out << " outputs are too many";
  // Enough chunks to give every SM a few blocks, but at least 32 elements per thread.
  const int64_t target_blocks = 4 * int64_t(context().sm_count > 0 ? context().sm_count : 80);
  const int64_t max_splits = std::max<int64_t>(1, n_red / (int64_t(by) * 32));
  int64_t splits = std::min<int64_t>({(target_blocks + grid_x - 1) / grid_x, max_splits, 65535});
  splits = std::max<int64_t>(splits, 1);
  const int64_t chunk = (n_red + splits - 1) / splits;
  splits = (n_red + chunk - 1) / chunk;

  const dim3 grid{unsigned(grid_x), unsigned(splits), 1u}, block{unsigned(bx), unsigned(by), 1u};
  const T* gp = storage_ptr<T>(g);
  if (splits == 1) {
    sum_to_shape_kernel<T><<<grid, block, 0, compute_stream()>>>(out.data<T>(), nullptr, gp, kept_ix, red_outer,
                                                                 inner_n, inner_stride, n_out, n_red, chunk);
    STRATA_KERNEL_CHECK();
    return out;
  }
  // The partials' block goes back to the caching allocator when this returns;
  // stream order keeps it alive until the second kernel has read it.
  Tensor partial = Tensor::empty({splits, n_out}, DType::F64, g.device());
  sum_to_shape_kernel<T><<<grid, block, 0, compute_stream()>>>(nullptr, partial.data<double>(), gp, kept_ix,
                                                               red_outer, inner_n, inner_stride, n_out, n_red, chunk);
  STRATA_KERNEL_CHECK();
  sum_partials_kernel<T><<<blocks_for(n_out), kThreads, 0, compute_stream()>>>(out.data<T>(), partial.data<double>(),
                                                                               n_out, splits);
  STRATA_KERNEL_CHECK();
  return out;
}

}  // namespace
}  // namespace strata::cuda

namespace strata::backend::cuda {

namespace cu = ::strata::cuda;

Tensor unary(UnaryOp op, const Tensor& x) {
  const char* name = unary_name(op);
  cu::check_gpu(name, {&x});
  return ::strata::dispatch_floating(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::with_unary(op, [&](auto f) {
      return cu::map1<T, T>(x, x.dtype(), cu::UnaryFn<T, decltype(f)>{f});
    });
  });
}

Tensor unary_backward(UnaryOp op, const Tensor& grad_y, const Tensor& x, const Tensor& y) {
  const char* name = unary_name(op);
  // Which saved tensor the derivative reads (as on the CPU); the other may be undefined.
  const bool uses_x = op == UnaryOp::Log || op == UnaryOp::Relu || op == UnaryOp::Gelu || op == UnaryOp::Abs ||
                      op == UnaryOp::Square;
  const bool uses_y = !uses_x && op != UnaryOp::Neg;
  STRATA_CHECK(!uses_x || x.defined()) << name << "_backward: needs the input x";
  STRATA_CHECK(!uses_y || y.defined()) << name << "_backward: needs the output y";
  const Tensor& xs = uses_x ? x : grad_y;
  const Tensor& ys = uses_y ? y : grad_y;
  cu::check_gpu(name, {&grad_y, &xs, &ys});
  for (const Tensor* t : {&grad_y, &xs, &ys})
    STRATA_CHECK(t->shape() == grad_y.shape() && t->dtype() == grad_y.dtype())
        << name << "_backward: gradient " << grad_y.str() << " does not match saved tensor " << t->str();
  return ::strata::dispatch_floating(grad_y.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::with_unary_grad(op, [&](auto f) {
      return cu::map3<T, T, T, T>(grad_y, xs, ys, grad_y.shape(), grad_y.dtype(),
                                  cu::UnaryGradFn<T, decltype(f)>{f});
    });
  });
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  cu::check_gpu(name, {&a, &b});
  cu::check_same_dtype(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  return ::strata::dispatch_floating(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::with_binary(op, [&](auto f) {
      return cu::map2<T, T, T>(a, b, shape, a.dtype(), cu::BinaryFn<T, decltype(f)>{f});
    });
  });
}

Tensor binary_scalar(BinaryOp op, const Tensor& a, double s) {
  const char* name = binary_name(op);
  cu::check_gpu(name, {&a});
  return ::strata::dispatch_floating(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cu::compute_t<T>;
    if (op == BinaryOp::Pow && s == 2.0)  // x * x, as on the CPU (no pow call)
      return cu::map1<T, T>(a, a.dtype(), cu::UnaryFn<T, functors::Square>{functors::Square{}});
    return cu::with_binary(op, [&](auto f) {
      return cu::map1<T, T>(a, a.dtype(), cu::RightScalarFn<T, decltype(f)>{f, C(s)});
    });
  });
}

Tensor scalar_binary(BinaryOp op, double s, const Tensor& a) {
  const char* name = binary_name(op);
  cu::check_gpu(name, {&a});
  return ::strata::dispatch_floating(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cu::compute_t<T>;
    return cu::with_binary(op, [&](auto f) {
      return cu::map1<T, T>(a, a.dtype(), cu::LeftScalarFn<T, decltype(f)>{f, C(s)});
    });
  });
}

Tensor compare(CompareOp op, const Tensor& a, const Tensor& b) {
  const char* name = cu::compare_name(op);
  cu::check_gpu(name, {&a, &b});
  cu::check_same_dtype(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  return dispatch_dtype(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::with_compare(op, [&](auto f) {
      return cu::map2<T, T, T>(a, b, shape, a.dtype(), cu::CompareFn<T, decltype(f)>{f});
    });
  });
}

Tensor compare_scalar(CompareOp op, const Tensor& a, double s) {
  const char* name = cu::compare_name(op);
  cu::check_gpu(name, {&a});
  return dispatch_dtype(a.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::with_compare(op, [&](auto f) {
      using S = std::conditional_t<std::is_integral_v<T>, double, cu::compute_t<T>>;
      return cu::map1<T, T>(a, a.dtype(), cu::CompareScalarFn<T, decltype(f), S>{f, S(s)});
    });
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  cu::check_gpu("where", {&cond, &a, &b});
  cu::check_same_dtype(a, b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  return dispatch_dtype(cond.dtype(), "where", [&](auto ctag) {
    using C = typename decltype(ctag)::type;
    return dispatch_dtype(a.dtype(), "where", [&](auto tag) {
      using T = typename decltype(tag)::type;
      return cu::map3<T, C, T, T>(cond, a, b, shape, a.dtype(), cu::WhereFn<C, T>{});
    });
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  cu::check_gpu("masked_fill", {&x, &mask});
  STRATA_CHECK(mask.dim() <= x.dim() && broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape())
      << "masked_fill: mask " << shape_str(mask.shape()) << " does not broadcast to " << shape_str(x.shape());
  return dispatch_dtype(mask.dtype(), "masked_fill", [&](auto mtag) {
    using M = typename decltype(mtag)::type;
    return dispatch_dtype(x.dtype(), "masked_fill", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T v = from_compute<T>(value);  // the CPU's conversion, once on the host
      return cu::map2<T, T, M>(x, mask, x.shape(), x.dtype(), cu::MaskedFillFn<T, M>{v});
    });
  });
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  STRATA_CHECK(shape.size() <= size_t(g.dim()) && broadcast_shapes(shape, g.shape(), "sum_to_shape") == g.shape())
      << "sum_to_shape: " << shape_str(shape) << " does not broadcast to the gradient's " << shape_str(g.shape());
  cu::check_gpu("sum_to_shape", {&g});
  return ::strata::dispatch_floating(g.dtype(), "sum_to_shape", [&](auto tag) {
    using T = typename decltype(tag)::type;
    return cu::sum_to_shape_impl<T>(g, shape);
  });
}

}  // namespace strata::backend::cuda

#undef STRATA_GRID_STRIDE
