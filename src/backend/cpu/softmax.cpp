// Softmax and log-softmax over any axis of any strided view.
//
// Every op walks "lanes": the 1-D runs along the reduced axis. Moving the axis
// last lets for_each_run hand out exactly those lanes (split over threads),
// with one stride per operand; lanes whose operands are all unit-stride (the
// last axis of contiguous tensors, the common case) take instantiations with a
// compile-time stride of 1 so the loops vectorise. Lanes along a non-last
// axis of tensors contiguous in the last dim are done in panels of adjacent
// lanes instead (see the panel kernels).
//
// Stability: each lane is shifted by its maximum before exp, so huge logits
// (1e4) do not overflow. -inf entries get probability 0. A lane that is
// entirely -inf (a fully masked attention row) has no mass to distribute:
// softmax returns all zeros there and log_softmax all -inf, rather than the
// NaN that 0/0 would give, so one padded row cannot poison a batch.
#include "strata/backend/softmax.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/softmax.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {

using Unit = std::integral_constant<int64_t, 1>;

// ---------------------------------------------------------------- vector exp
// glibc's expf is scalar and GCC will not vectorise a polynomial exp written
// with scalar code under the default -ftrapping-math, so f32 lanes use an
// explicit vector (GCC/Clang vector extensions): ~0.5 ns per element instead
// of ~2 ns, which is most of a [4096, 32000] softmax.
#if defined(__AVX2__)
constexpr int kVec = 8;
#else
constexpr int kVec = 4;  // wider vectors split badly on SSE-only targets
#endif
typedef float vfloat __attribute__((vector_size(kVec * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kVec * sizeof(int32_t))));
typedef uint32_t vuint __attribute__((vector_size(kVec * sizeof(uint32_t))));
typedef double vdouble __attribute__((vector_size(kVec * sizeof(double))));

// exp(x), relative error < 1e-7 for x in [-87, 88] (Cephes expf: Cody-Waite
// reduction x = n ln2 + r, degree-6 polynomial for exp(r), 2^n by building the
// exponent bits). Below -87 the result is 0 (this includes -inf), which is what
// softmax wants for masked logits; NaN propagates.
inline vfloat exp_vec(vfloat x) {
  const vint under = x < -87.0f;
  vfloat xc = under ? vfloat{} - 87.0f : x;
  xc = xc > 88.0f ? vfloat{} + 88.0f : xc;
  // k = n + 128 with n = floor(x log2e + 0.5): the +128 keeps the value
  // positive so truncation floors. The bit arithmetic below is unsigned so a
  // NaN lane (converted to INT_MIN) wraps instead of overflowing; its result
  // is NaN through r anyway.
  const vint k = __builtin_convertvector(xc * 1.44269504088896341f + 128.5f, vint);
  const vfloat fn = __builtin_convertvector(k, vfloat) - 128.0f;
  const vfloat r = xc - fn * 0.693359375f + fn * 2.12194440e-4f;
  vfloat p = vfloat{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vfloat two_n = (vfloat)(((vuint)k - 1u) << 23);  // exponent bits of 2^n: n + 127 = k - 1
  return under ? vfloat{} : p * two_n;
}

// Up to kVec elements i0, i0 + 1, ... of a strided lane; missing ones are -inf.
template <class S>
vfloat load_vec(const float* x, S xs, int64_t i0, int64_t count) {
  vfloat v;
  if (std::is_same_v<S, Unit> && count == kVec) {
    std::memcpy(&v, x + i0, sizeof v);
  } else {
    v = vfloat{} - std::numeric_limits<float>::infinity();
    for (int64_t k = 0; k < count; ++k) v[k] = x[(i0 + k) * xs];
  }
  return v;
}

template <class S>
void store_vec(float* y, S ys, int64_t i0, int64_t count, vfloat v) {
  if (std::is_same_v<S, Unit> && count == kVec) {
    std::memcpy(y + i0, &v, sizeof v);
  } else {
    for (int64_t k = 0; k < count; ++k) y[(i0 + k) * ys] = v[k];
  }
}

// y[i] = exp(x[i] - shift) for a lane; returns the sum of the y[i] in double.
template <class S>
double exp_shift_sum(const float* x, S xs, float* y, S ys, int64_t n, float shift) {
  // two accumulators: one would serialise every iteration on the add latency
  vdouble acc0{}, acc1{};
  int64_t i = 0;
  for (; i + 2 * kVec <= n; i += 2 * kVec) {
    const vfloat e0 = exp_vec(load_vec(x, xs, i, kVec) - shift);
    const vfloat e1 = exp_vec(load_vec(x, xs, i + kVec, kVec) - shift);
    store_vec(y, ys, i, kVec, e0);
    store_vec(y, ys, i + kVec, kVec, e1);
    acc0 += __builtin_convertvector(e0, vdouble);
    acc1 += __builtin_convertvector(e1, vdouble);
  }
  for (; i < n; i += kVec) {  // a tail padded with -inf, whose exp adds 0
    const int64_t count = std::min<int64_t>(kVec, n - i);
    const vfloat e = exp_vec(load_vec(x, xs, i, count) - shift);
    store_vec(y, ys, i, count, e);
    acc0 += __builtin_convertvector(e, vdouble);
  }
  acc0 += acc1;
  double s = 0;
  for (int k = 0; k < kVec; ++k) s += acc0[k];
  return s;
}

template <class S>
double exp_shift_sum(const double* x, S xs, double* y, S ys, int64_t n, double shift) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::exp(x[i * xs] - shift);
    y[i * ys] = e;
    s += e;
  }
  return s;
}

// Panel rows: y[c] = exp(x[c] - shift[c]) for c < w (contiguous), sum[c] += y[c].
void exp_row(const float* x, const float* shift, float* y, int64_t w, double* sum) {
  for (int64_t c = 0; c < w; c += kVec) {
    const int64_t count = std::min<int64_t>(kVec, w - c);
    const vfloat e = exp_vec(load_vec(x, Unit{}, c, count) - load_vec(shift, Unit{}, c, count));
    store_vec(y, Unit{}, c, count, e);
    for (int64_t k = 0; k < count; ++k) sum[c + k] += double(e[k]);
  }
}

void exp_row(const double* x, const double* shift, double* y, int64_t w, double* sum) {
  for (int64_t c = 0; c < w; ++c) {
    y[c] = std::exp(x[c] - shift[c]);
    sum[c] += y[c];
  }
}

// ---------------------------------------------------------------- lane kernels

template <class T, class S>
T lane_max(const T* x, S xs, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i * xs] > m ? x[i * xs] : m;
  return m;
}

template <class T, class S>
void softmax_lane(const T* x, S xs, T* y, S ys, int64_t n, bool log) {
  const T m = lane_max(x, xs, n);
  if (m == -std::numeric_limits<T>::infinity()) {  // fully masked lane (see the file comment)
    const T fill = log ? -std::numeric_limits<T>::infinity() : T(0);
    for (int64_t i = 0; i < n; ++i) y[i * ys] = fill;
    return;
  }
  // y holds exp(x - m) after this; log_softmax overwrites it below.
  const double s = exp_shift_sum(x, xs, y, ys, n, m);
  if (log) {
    // (x - m) - log(s), not x - (m + log(s)): with logits ~1e4 the sum m + log(s)
    // would round away the small log(s) in f32.
    const T log_s = T(std::log(s));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i * ys] = (x[i * xs] - m) - log_s;
  } else {
    const T inv = T(1.0 / s);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i * ys] *= inv;
  }
}

// dx = y * (g - sum(g * y))
template <class T, class S>
void softmax_backward_lane(const T* g, S gs, const T* y, S ys, T* dx, S ds, int64_t n) {
  double dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < n; ++i) dot += double(g[i * gs]) * double(y[i * ys]);
  const T d = T(dot);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i * ds] = y[i * ys] * (g[i * gs] - d);
}

// dx = g - exp(y) * sum(g)
template <class T, class S>
void log_softmax_backward_lane(const T* g, S gs, const T* y, S ys, T* dx, S ds, int64_t n) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += double(g[i * gs]);
  exp_shift_sum(y, ys, dx, ds, n, T(0));  // dx = exp(y) = softmax(x)
  const T s = T(sum);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i * ds] = g[i * gs] - dx[i * ds] * s;
}

// ---------------------------------------------------------------- panel kernels
// Lanes along a non-last axis of tensors that are unit-stride in the last dim
// lie side by side in memory. Walking them one at a time jumps by the axis
// stride on every element (a [32000, 4096] softmax over axis 0 took 11 s that
// way, 0.2 s in panels on 2 cores), so they are processed kPanel lanes at a
// time, one contiguous row segment per step. A panel is w <= kPanel lanes of
// length n; row j of operand k starts at p_k + j * s_k.
constexpr int64_t kPanel = 256;

template <class T>
void softmax_panel(const T* x, int64_t xs, T* y, int64_t ys, int64_t n, int64_t w, bool log) {
  T m[kPanel];
  double s[kPanel];
  for (int64_t c = 0; c < w; ++c) m[c] = -std::numeric_limits<T>::infinity(), s[c] = 0;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < w; ++c) m[c] = x[j * xs + c] > m[c] ? x[j * xs + c] : m[c];
  // A fully -inf lane shifts by 0 instead: its exps are then 0, s stays 0 and
  // the scale below maps it to zeros / -inf like softmax_lane does.
  for (int64_t c = 0; c < w; ++c)
    if (m[c] == -std::numeric_limits<T>::infinity()) m[c] = T(0);
  for (int64_t j = 0; j < n; ++j) exp_row(x + j * xs, m, y + j * ys, w, s);
  T f[kPanel];
  if (log) {
    for (int64_t c = 0; c < w; ++c) f[c] = s[c] == 0 ? std::numeric_limits<T>::infinity() : T(std::log(s[c]));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < w; ++c) y[j * ys + c] = (x[j * xs + c] - m[c]) - f[c];
  } else {
    for (int64_t c = 0; c < w; ++c) f[c] = s[c] == 0 ? T(0) : T(1.0 / s[c]);  // a NaN sum stays NaN
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < w; ++c) y[j * ys + c] *= f[c];
  }
}

template <class T>
void softmax_backward_panel(const T* g, int64_t gs, const T* y, int64_t ys, T* dx, int64_t ds, int64_t n,
                            int64_t w) {
  double dot[kPanel] = {};
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < w; ++c) dot[c] += double(g[j * gs + c]) * double(y[j * ys + c]);
  T d[kPanel];
  for (int64_t c = 0; c < w; ++c) d[c] = T(dot[c]);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < w; ++c) dx[j * ds + c] = y[j * ys + c] * (g[j * gs + c] - d[c]);
}

template <class T>
void log_softmax_backward_panel(const T* g, int64_t gs, const T* y, int64_t ys, T* dx, int64_t ds, int64_t n,
                                int64_t w) {
  double sum[kPanel] = {}, unused[kPanel] = {};
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < w; ++c) sum[c] += double(g[j * gs + c]);
  T s[kPanel], zero[kPanel] = {};
  for (int64_t c = 0; c < w; ++c) s[c] = T(sum[c]);
  for (int64_t j = 0; j < n; ++j) {
    T* dr = dx + j * ds;
    exp_row(y + j * ys, zero, dr, w, unused);  // dr = exp(y) = softmax(x)
    for (int64_t c = 0; c < w; ++c) dr[c] = g[j * gs + c] - dr[c] * s[c];
  }
}

// ---------------------------------------------------------------- lane iteration

// Calls fn(run) for every lane along `axis` of the N tensors (which share a
// shape); run.offset/run.stride are per operand, run.length is the lane size.
template <size_t N, class Fn>
void for_each_lane(const Shape& shape, int64_t axis, const std::array<const Tensor*, N>& ts, Fn&& fn) {
  Shape s;
  std::array<Strides, N> st;
  auto push = [&](int64_t d) {
    s.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) st[k].push_back(ts[k]->strides()[d]);
  };
  for (int64_t d = 0; d < int64_t(shape.size()); ++d)
    if (d != axis) push(d);
  push(axis);  // last, so the innermost runs are the lanes
  std::array<const int64_t*, N> sp;
  std::array<int64_t, N> base;
  for (size_t k = 0; k < N; ++k) {
    sp[k] = st[k].data();
    base[k] = ts[k]->offset();
  }
  for_each_run<N>(s, sp, base, fn);
}

// Panels apply when the axis is not the last dim and every operand is
// unit-stride along the last dim (so adjacent lanes are adjacent in memory).
template <size_t N>
bool use_panels(const Shape& shape, int64_t axis, const std::array<const Tensor*, N>& ts) {
  const int64_t last = int64_t(shape.size()) - 1;
  if (axis == last || shape[last] < 2) return false;
  for (size_t k = 0; k < N; ++k)
    if (ts[k]->strides()[last] != 1) return false;
  return true;
}

// Calls fn(offsets, w) for every panel: up to kPanel adjacent lanes at one
// position of the dims other than the axis and the last; offsets per operand.
template <size_t N, class Fn>
void for_each_panel(const Shape& shape, int64_t axis, const std::array<const Tensor*, N>& ts, Fn&& fn) {
  const int64_t last = int64_t(shape.size()) - 1;
  std::vector<int64_t> dims;  // the dims a panel position is made of
  int64_t positions = 1;
  for (int64_t d = 0; d < last; ++d)
    if (d != axis) dims.push_back(d), positions *= shape[d];
  const int64_t W = shape[last], blocks = (W + kPanel - 1) / kPanel;
  if (shape_numel(shape) == 0) return;
#pragma omp parallel for collapse(2) schedule(static) if (shape_numel(shape) >= kParallelGrain)
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t b = 0; b < blocks; ++b) {
      std::array<int64_t, N> off;
      for (size_t k = 0; k < N; ++k) off[k] = ts[k]->offset() + b * kPanel;
      int64_t rem = p;
      for (size_t i = dims.size(); i-- > 0;) {
        const int64_t d = dims[i], idx = rem % shape[d];
        rem /= shape[d];
        for (size_t k = 0; k < N; ++k) off[k] += idx * ts[k]->strides()[d];
      }
      fn(off, std::min(kPanel, W - b * kPanel));
    }
  }
}

template <class T>
T* base_ptr(const Tensor& t) {
  return static_cast<T*>(t.impl().storage->data());
}

void check_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor " << t.str() << " is on " << t.device().str()
                                    << " and needs the CUDA backend";
}

Tensor softmax_forward(const Tensor& x, int64_t axis, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_cpu(x, op);
  const int64_t a = wrap_dim(axis, x.dim(), op);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xb = base_ptr<T>(x);
    T* yb = base_ptr<T>(y);
    if (use_panels<2>(x.shape(), a, {&x, &y})) {
      const int64_t xs = x.strides()[a], ys = y.strides()[a], n = x.shape()[a];
      for_each_panel<2>(x.shape(), a, {&x, &y}, [&](const std::array<int64_t, 2>& off, int64_t w) {
        softmax_panel(xb + off[0], xs, yb + off[1], ys, n, w, log);
      });
      return;
    }
    for_each_lane<2>(x.shape(), a, {&x, &y}, [&](const StridedRun<2>& r) {
      const T* xp = xb + r.offset[0];
      T* yp = yb + r.offset[1];
      if (r.stride[0] == 1 && r.stride[1] == 1)
        softmax_lane(xp, Unit{}, yp, Unit{}, r.length, log);
      else
        softmax_lane(xp, r.stride[0], yp, r.stride[1], r.length, log);
    });
  });
  return y;
}

template <bool Log>
Tensor backward_impl(const Tensor& g, const Tensor& y, int64_t axis) {
  const char* op = Log ? "log_softmax_backward" : "softmax_backward";
  check_cpu(g, op);
  check_cpu(y, op);
  STRATA_CHECK(g.shape() == y.shape() && g.dtype() == y.dtype())
      << op << ": gradient " << g.str() << " does not match the output " << y.str();
  const int64_t a = wrap_dim(axis, y.dim(), op);
  Tensor dx = Tensor::empty(y.shape(), y.dtype());
  dispatch_float(y.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gb = base_ptr<T>(g);
    const T* yb = base_ptr<T>(y);
    T* db = base_ptr<T>(dx);
    if (use_panels<3>(y.shape(), a, {&g, &y, &dx})) {
      const int64_t gs = g.strides()[a], ys = y.strides()[a], ds = dx.strides()[a], n = y.shape()[a];
      for_each_panel<3>(y.shape(), a, {&g, &y, &dx}, [&](const std::array<int64_t, 3>& off, int64_t w) {
        if constexpr (Log)
          log_softmax_backward_panel(gb + off[0], gs, yb + off[1], ys, db + off[2], ds, n, w);
        else
          softmax_backward_panel(gb + off[0], gs, yb + off[1], ys, db + off[2], ds, n, w);
      });
      return;
    }
    for_each_lane<3>(y.shape(), a, {&g, &y, &dx}, [&](const StridedRun<3>& r) {
      const T* gp = gb + r.offset[0];
      const T* yp = yb + r.offset[1];
      T* dp = db + r.offset[2];
      const bool unit = r.stride[0] == 1 && r.stride[1] == 1 && r.stride[2] == 1;
      if constexpr (Log) {
        if (unit)
          log_softmax_backward_lane(gp, Unit{}, yp, Unit{}, dp, Unit{}, r.length);
        else
          log_softmax_backward_lane(gp, r.stride[0], yp, r.stride[1], dp, r.stride[2], r.length);
      } else {
        if (unit)
          softmax_backward_lane(gp, Unit{}, yp, Unit{}, dp, Unit{}, r.length);
        else
          softmax_backward_lane(gp, r.stride[0], yp, r.stride[1], dp, r.stride[2], r.length);
      }
    });
  });
  return dx;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("softmax", {x})) return cuda::softmax(x, axis);
#endif
  return softmax_forward(x, axis, false);
}
Tensor log_softmax(const Tensor& x, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("log_softmax", {x})) return cuda::log_softmax(x, axis);
#endif
  return softmax_forward(x, axis, true);
}

Tensor softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("softmax_backward", {grad_y, y})) return cuda::softmax_backward(grad_y, y, axis);
#endif
  return backward_impl<false>(grad_y, y, axis);
}
Tensor log_softmax_backward(const Tensor& grad_y, const Tensor& y, int64_t axis) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("log_softmax_backward", {grad_y, y})) return cuda::log_softmax_backward(grad_y, y, axis);
#endif
  return backward_impl<true>(grad_y, y, axis);
}

}  // namespace strata::backend
