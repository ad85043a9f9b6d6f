// Fused layer normalisation over the last axis.
//
// Rows are independent, so both passes split rows over threads. Row
// statistics are accumulated in double with two passes (mean, then the sum of
// squared deviations): a one-pass E[x^2] - E[x]^2 in f32 loses every digit
// when |mean| >> std, which happens for un-normalised residual streams.
//
// dgamma/dbeta are sums over rows. Each fixed block of rows writes its own
// partial sums and the blocks are added in order afterwards, so the result is
// race-free and does not depend on the number of threads.
#include "strata/backend/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/layer_norm.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {

using Unit = std::integral_constant<int64_t, 1>;

// At most this many partial-sum blocks for dgamma/dbeta (memory: blocks * D * 2 doubles).
constexpr int64_t kMaxBlocks = 32;

void check_cpu(const Tensor& t, const char* op) {
  STRATA_CHECK(t.device().is_cpu()) << op << ": tensor " << t.str() << " is on " << t.device().str()
                                    << " and needs the CUDA backend";
}

// Storage offset of row r (all dims but the last, row-major) of t.
int64_t row_offset(const Tensor& t, int64_t r) {
  int64_t off = t.offset();
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    const int64_t n = t.shape()[d];
    off += (r % n) * t.strides()[d];
    r /= n;
  }
  return off;
}

// gamma/beta as contiguous [D] vectors of x's dtype, or undefined.
Tensor affine_param(const Tensor& p, const Tensor& x, int64_t D, const char* name) {
  if (!p.defined()) return p;
  check_cpu(p, "layer_norm");
  STRATA_CHECK(p.shape() == Shape{D} && p.dtype() == x.dtype())
      << "layer_norm: " << name << " " << p.str() << " does not match normalised size " << D << " of input "
      << x.str();
  return p.contiguous();
}

int64_t last_dim(const Tensor& x, const char* op) {
  check_cpu(x, op);
  STRATA_CHECK(x.dim() >= 1 && x.shape().back() > 0)
      << op << ": input " << x.str() << " needs a non-empty last axis to normalise over";
  return x.shape().back();
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <class T, class S>
void forward_row(const T* x, S xs, T* y, const T* gamma, const T* beta, int64_t D, double eps, T* mean_out,
                 T* rstd_out) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < D; ++i) sum += double(x[i * xs]);
  const double mean = sum / double(D);
  double sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < D; ++i) {
    const double c = double(x[i * xs]) - mean;
    sq += c * c;
  }
  const double rstd = 1.0 / std::sqrt(sq / double(D) + eps);
  *mean_out = T(mean);
  *rstd_out = T(rstd);
  // Normalise in double too: x - mean with the mean rounded to f32 would keep
  // only the bits of x that survive next to a large mean.
  if (gamma && beta) {
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) y[i] = T((double(x[i * xs]) - mean) * rstd * double(gamma[i]) + double(beta[i]));
  } else if (gamma) {
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) y[i] = T((double(x[i * xs]) - mean) * rstd * double(gamma[i]));
  } else if (beta) {
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) y[i] = T((double(x[i * xs]) - mean) * rstd + double(beta[i]));
  } else {
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) y[i] = T((double(x[i * xs]) - mean) * rstd);
  }
}

// With xhat = (x - mean) * rstd and dxhat = dy * gamma:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// and the row's contributions dy * xhat, dy go to the block's dgamma/dbeta partials.
template <class T, class S>
void backward_row(const T* dy, S dys, const T* x, S xs, const T* gamma, T mean, T rstd, int64_t D, T* dx,
                  double* pg, double* pb) {
  double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < D; ++i) {
    const T xhat = (x[i * xs] - mean) * rstd;
    const T dxhat = gamma ? dy[i * dys] * gamma[i] : dy[i * dys];
    s1 += double(dxhat);
    s2 += double(dxhat) * double(xhat);
  }
  const T c1 = T(s1 / double(D)), c2 = T(s2 / double(D));
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) {
    const T g = dy[i * dys];
    const T xhat = (x[i * xs] - mean) * rstd;
    const T dxhat = gamma ? g * gamma[i] : g;
    dx[i] = rstd * (dxhat - c1 - xhat * c2);
    pg[i] += double(g) * double(xhat);
    pb[i] += double(g);
  }
}

}  // namespace

LayerNormForward layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("layer_norm", {x, gamma, beta})) return cuda::layer_norm_forward(x, gamma, beta, eps);
#endif
  const int64_t D = last_dim(x, "layer_norm");
  STRATA_CHECK(std::isfinite(eps) && eps >= 0) << "layer_norm: eps must be finite and >= 0, got " << eps;
  const Tensor g = affine_param(gamma, x, D, "gamma");
  const Tensor b = affine_param(beta, x, D, "beta");
  const int64_t rows = x.numel() / D;
  LayerNormForward out;
  out.y = Tensor::empty(x.shape(), x.dtype());
  out.mean = Tensor::empty({rows}, x.dtype());
  out.rstd = Tensor::empty({rows}, x.dtype());
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xb = static_cast<const T*>(x.impl().storage->data());
    const int64_t xs = x.strides().back();
    T* y = out.y.data<T>();
    T* mean = out.mean.data<T>();
    T* rstd = out.rstd.data<T>();
    const T* gp = ptr_or_null<T>(g);
    const T* bp = ptr_or_null<T>(b);
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xb + row_offset(x, r);
      if (xs == 1)
        forward_row(xr, Unit{}, y + r * D, gp, bp, D, eps, mean + r, rstd + r);
      else
        forward_row(xr, xs, y + r * D, gp, bp, D, eps, mean + r, rstd + r);
    }
  });
  return out;
}

LayerNormBackward layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                      const LayerNormForward& fwd) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("layer_norm_backward", {dy, x, gamma, fwd.mean, fwd.rstd}))
    return cuda::layer_norm_backward(dy, x, gamma, fwd);
#endif
  const int64_t D = last_dim(x, "layer_norm_backward");
  check_cpu(dy, "layer_norm_backward");
  STRATA_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype())
      << "layer_norm_backward: gradient " << dy.str() << " does not match input " << x.str();
  const int64_t rows = x.numel() / D;
  for (const Tensor* s : {&fwd.mean, &fwd.rstd})
    STRATA_CHECK(s->defined() && s->shape() == Shape{rows} && s->dtype() == x.dtype())
        << "layer_norm_backward: saved statistics " << s->str() << " do not match input " << x.str()
        << " (expected " << rows << " rows)";
  const Tensor g = affine_param(gamma, x, D, "gamma");
  const Tensor mean_c = fwd.mean.contiguous(), rstd_c = fwd.rstd.contiguous();

  LayerNormBackward out;
  out.dx = Tensor::empty(x.shape(), x.dtype());
  out.dgamma = Tensor::empty({D}, x.dtype());
  out.dbeta = Tensor::empty({D}, x.dtype());
  const int64_t blocks = std::min(rows, kMaxBlocks);
  const int64_t per_block = blocks > 0 ? (rows + blocks - 1) / blocks : 0;
  std::vector<double> partial(size_t(2 * std::max<int64_t>(blocks, 1) * D), 0.0);

  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xb = static_cast<const T*>(x.impl().storage->data());
    const T* dyb = static_cast<const T*>(dy.impl().storage->data());
    const int64_t xs = x.strides().back(), dys = dy.strides().back();
    const T* mean = mean_c.data<T>();
    const T* rstd = rstd_c.data<T>();
    const T* gp = ptr_or_null<T>(g);
    T* dx = out.dx.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelGrain)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      double* pg = partial.data() + 2 * blk * D;
      double* pb = pg + D;
      const int64_t r1 = std::min(rows, (blk + 1) * per_block);
      for (int64_t r = blk * per_block; r < r1; ++r) {
        const T* xr = xb + row_offset(x, r);
        const T* dyr = dyb + row_offset(dy, r);
        if (xs == 1 && dys == 1)
          backward_row(dyr, Unit{}, xr, Unit{}, gp, mean[r], rstd[r], D, dx + r * D, pg, pb);
        else
          backward_row(dyr, dys, xr, xs, gp, mean[r], rstd[r], D, dx + r * D, pg, pb);
      }
    }
    T* dg = out.dgamma.data<T>();
    T* dbeta = out.dbeta.data<T>();
    for (int64_t i = 0; i < D; ++i) {
      double sg = 0, sb = 0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        sg += partial[size_t(2 * blk * D + i)];
        sb += partial[size_t(2 * blk * D + D + i)];
      }
      dg[i] = T(sg);
      dbeta[i] = T(sb);
    }
  });
  return out;
}

}  // namespace strata::backend
