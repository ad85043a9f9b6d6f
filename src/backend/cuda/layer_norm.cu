// GPU fused layer normalisation over the last axis (contract:
// strata/backend/layer_norm.h and strata/backend/cuda/layer_norm.h; CPU twin:
// src/backend/cpu/layer_norm.cpp).
//
// Forward and dx: one block per row. Like the CPU, the row statistics are two
// passes accumulated in double (mean, then the squared deviations) and y is
// formed in double: a one-pass E[x^2] - E[x]^2, or x - mean with the mean
// rounded to f32, loses every digit when |mean| >> std (un-normalised residual
// streams). These kernels are bandwidth-bound, so the fp64 adds cost nothing
// measurable on sm_80/sm_90.
//
// dgamma/dbeta are column sums over rows, done in two stages without atomics:
// each (column tile, row chunk) block writes per-column partial sums (double,
// as the CPU's partials), then one pass adds the chunks in order. The chunk
// split depends only on the row count, so repeated runs on any GPU give
// bit-identical parameter gradients.
#include "strata/backend/cuda/layer_norm.h"

#include <array>
#include <cmath>

#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::layer_norm_impl {
namespace {

// At most this many row chunks in the dgamma/dbeta partial sums.
constexpr int64_t kMaxChunks = 128;

// Statistics are stored as compute_t<T>: T for f32/f64, f32 for f16/bf16.
template <class T>
__global__ void forward_kernel(const T* __restrict__ x, StridedIndexer<1> rows_ix, int64_t xs, int64_t rows,
                               int64_t D, const T* __restrict__ gamma, int64_t gs, const T* __restrict__ beta,
                               int64_t bs, double eps, T* __restrict__ y, compute_t<T>* __restrict__ mean_out,
                               compute_t<T>* __restrict__ rstd_out) {
  using S = compute_t<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    int64_t off[1];
    rows_ix.offsets(r, off);
    const T* xr = x + off[0];
    T* yr = y + r * D;
    double sum = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sum += double(load(xr + j * xs));
    const double mu = block_reduce(sum, ReduceSum{}) / double(D);
    double sq = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      const double c = double(load(xr + j * xs)) - mu;
      sq += c * c;
    }
    const double rs = 1.0 / sqrt(block_reduce(sq, ReduceSum{}) / double(D) + eps);
    if (threadIdx.x == 0) {
      mean_out[r] = S(mu);
      rstd_out[r] = S(rs);
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      double v = (double(load(xr + j * xs)) - mu) * rs;
      if (gamma) v *= double(load(gamma + j * gs));
      if (beta) v += double(load(beta + j * bs));
      yr[j] = store_cast<T>(v);
    }
  }
}

// With xhat = (x - mean) * rstd and dxhat = dy * gamma (in the compute type, as the CPU):
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
template <class T>
__global__ void dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, StridedIndexer<2> rows_ix,
                          int64_t dys, int64_t xs, int64_t rows, int64_t D, const T* __restrict__ gamma, int64_t gs,
                          const compute_t<T>* __restrict__ mean, int64_t ms, const compute_t<T>* __restrict__ rstd,
                          int64_t rss, T* __restrict__ dx) {
  using C = compute_t<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    int64_t off[2];
    rows_ix.offsets(r, off);
    const T* dyr = dy + off[0];
    const T* xr = x + off[1];
    const C mu = mean[r * ms], rs = rstd[r * rss];
    double s1 = 0, s2 = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      const C xhat = (load(xr + j * xs) - mu) * rs;
      const C g = load(dyr + j * dys);
      const C dxhat = gamma ? g * load(gamma + j * gs) : g;
      s1 += double(dxhat);
      s2 += double(dxhat) * double(xhat);
    }
    s1 = block_reduce(s1, ReduceSum{});
    s2 = block_reduce(s2, ReduceSum{});
    const C c1 = C(s1 / double(D)), c2 = C(s2 / double(D));
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      const C xhat = (load(xr + j * xs) - mu) * rs;
      const C g = load(dyr + j * dys);
      const C dxhat = gamma ? g * load(gamma + j * gs) : g;
      dx[r * D + j] = store_cast<T>(rs * (dxhat - c1 - xhat * c2));
    }
  }
}

// Stage 1 of dgamma/dbeta: block (column tile blockIdx.x, row chunk blockIdx.y);
// each thread owns a column (adjacent threads read adjacent elements of a row)
// and walks the chunk's rows in order. partial is [chunks][2][D].
template <class T>
__global__ void param_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x, StridedIndexer<2> rows_ix,
                                     int64_t dys, int64_t xs, int64_t rows, int64_t D,
                                     const compute_t<T>* __restrict__ mean, int64_t ms,
                                     const compute_t<T>* __restrict__ rstd, int64_t rss, int64_t rows_per_chunk,
                                     double* __restrict__ partial) {
  using C = compute_t<T>;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= D) return;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double pg = 0, pb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    int64_t off[2];
    rows_ix.offsets(r, off);
    const C xhat = (load(x + off[1] + c * xs) - mean[r * ms]) * rstd[r * rss];
    const C g = load(dy + off[0] + c * dys);
    pg += double(g) * double(xhat);
    pb += double(g);
  }
  partial[(2 * chunk) * D + c] = pg;
  partial[(2 * chunk + 1) * D + c] = pb;
}

// Stage 2: per column, the chunks' partials added in chunk order (zero when there are no rows).
template <class T>
__global__ void param_finish_kernel(const double* __restrict__ partial, int64_t chunks, int64_t D,
                                    T* __restrict__ dgamma, T* __restrict__ dbeta) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < D; c += int64_t(gridDim.x) * blockDim.x) {
    double sg = 0, sb = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      sg += partial[(2 * k) * D + c];
      sb += partial[(2 * k + 1) * D + c];
    }
    dgamma[c] = store_cast<T>(sg);
    dbeta[c] = store_cast<T>(sb);
  }
}

// ---------------------------------------------------------------- host helpers

DType stat_dtype(DType x) { return x == DType::F16 || x == DType::BF16 ? DType::F32 : x; }

// Offsets of the rows (all dims but the last, row-major) in each operand.
template <int N>
StridedIndexer<N> row_indexer(const std::array<const Tensor*, N>& ts) {
  std::array<Tensor, N> views;
  std::array<const Tensor*, N> ptrs;
  for (int k = 0; k < N; ++k) {
    const Tensor& t = *ts[size_t(k)];
    Shape s(t.shape().begin(), t.shape().end() - 1);
    Strides st(t.strides().begin(), t.strides().end() - 1);
    views[size_t(k)] = make_view(t, s, st, t.offset());
    ptrs[size_t(k)] = &views[size_t(k)];
  }
  return make_indexer<N>(ptrs);
}

int64_t last_dim(const Tensor& x, const char* op) {
  STRATA_CHECK(x.dim() >= 1 && x.shape().back() > 0)
      << op << ": input " << x.str() << " needs a non-empty last axis to normalise over";
  return x.shape().back();
}

void check_param(const Tensor& p, const Tensor& x, int64_t D, const char* name) {
  if (!p.defined()) return;
  STRATA_CHECK(p.shape() == Shape{D} && p.dtype() == x.dtype())
      << "layer_norm: " << name << " " << p.str() << " does not match normalised size " << D << " of input "
      << x.str();
}

// Element-0 pointer of a 1-D view (null for an undefined tensor) and its stride.
template <class T>
const T* vec_ptr(const Tensor& t) {
  return t.defined() ? storage_ptr<T>(t) + t.offset() : nullptr;
}
int64_t vec_stride(const Tensor& t) { return t.defined() ? t.strides()[0] : 0; }

// Block size for a row of D: one warp for short rows, at most 256 threads.
int row_threads(int64_t D) {
  const int64_t t = (D + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > 256 ? 256 : t));
}
unsigned row_blocks(int64_t rows) {
  const int64_t cap = int64_t(context().sm_count > 0 ? context().sm_count : 80) * 32;
  return unsigned(rows < cap ? rows : cap);
}

}  // namespace

backend::LayerNormForward forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t D = last_dim(x, "layer_norm");
  STRATA_CHECK(std::isfinite(eps) && eps >= 0) << "layer_norm: eps must be finite and >= 0, got " << eps;
  check_param(gamma, x, D, "gamma");
  check_param(beta, x, D, "beta");
  const int64_t rows = x.numel() / D;
  backend::LayerNormForward out;
  dispatch_floating(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    out.y = Tensor::empty(x.shape(), x.dtype(), x.device());
    out.mean = Tensor::empty({rows}, stat_dtype(x.dtype()), x.device());
    out.rstd = Tensor::empty({rows}, stat_dtype(x.dtype()), x.device());
    if (rows == 0) return;
    forward_kernel<T><<<row_blocks(rows), row_threads(D), 0, compute_stream()>>>(
        storage_ptr<T>(x), row_indexer<1>({&x}), x.strides().back(), rows, D, vec_ptr<T>(gamma), vec_stride(gamma),
        vec_ptr<T>(beta), vec_stride(beta), eps, storage_ptr<T>(out.y), storage_ptr<compute_t<T>>(out.mean),
        storage_ptr<compute_t<T>>(out.rstd));
    STRATA_KERNEL_CHECK();
  });
  return out;
}

backend::LayerNormBackward backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                    const backend::LayerNormForward& fwd) {
  const int64_t D = last_dim(x, "layer_norm_backward");
  STRATA_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype())
      << "layer_norm_backward: gradient " << dy.str() << " does not match input " << x.str();
  const int64_t rows = x.numel() / D;
  for (const Tensor* s : {&fwd.mean, &fwd.rstd}) {
    STRATA_CHECK(s->defined() && s->shape() == Shape{rows} && s->dtype() == stat_dtype(x.dtype()))
        << "layer_norm_backward: saved statistics " << (s->defined() ? s->str() : std::string("(undefined)"))
        << " do not match input " << x.str() << " (expected " << rows << " rows of "
        << dtype_name(stat_dtype(x.dtype())) << ")";
    STRATA_CHECK(s->device() == x.device())
        << "layer_norm_backward: saved statistics " << s->str() << " are not on the device of input " << x.str();
  }
  check_param(gamma, x, D, "gamma");
  backend::LayerNormBackward out;
  dispatch_floating(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = compute_t<T>;
    out.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    out.dgamma = Tensor::empty({D}, x.dtype(), x.device());
    out.dbeta = Tensor::empty({D}, x.dtype(), x.device());
    const int64_t chunks0 = rows < kMaxChunks ? rows : kMaxChunks;
    const int64_t per_chunk = chunks0 > 0 ? (rows + chunks0 - 1) / chunks0 : 0;
    const int64_t chunks = per_chunk > 0 ? (rows + per_chunk - 1) / per_chunk : 0;
    // kept alive until the end of this scope; the caching allocator reuses it
    // only for work queued after ours on the same stream
    Tensor partial = Tensor::empty({chunks > 0 ? 2 * chunks * D : 1}, DType::F64, x.device());
    cudaStream_t stream = compute_stream();
    const S* mp = vec_ptr<S>(fwd.mean);
    const S* rp = vec_ptr<S>(fwd.rstd);
    const int64_t ms = vec_stride(fwd.mean), rss = vec_stride(fwd.rstd);
    if (rows > 0) {
      const StridedIndexer<2> ix = row_indexer<2>({&dy, &x});
      const T* dyp = storage_ptr<T>(dy);
      const T* xp = storage_ptr<T>(x);
      dx_kernel<T><<<row_blocks(rows), row_threads(D), 0, stream>>>(dyp, xp, ix, dy.strides().back(),
                                                                    x.strides().back(), rows, D, vec_ptr<T>(gamma),
                                                                    vec_stride(gamma), mp, ms, rp, rss,
                                                                    storage_ptr<T>(out.dx));
      STRATA_KERNEL_CHECK();
      const dim3 grid(unsigned((D + kThreads - 1) / kThreads), unsigned(chunks));
      param_partial_kernel<T><<<grid, kThreads, 0, stream>>>(dyp, xp, ix, dy.strides().back(), x.strides().back(),
                                                             rows, D, mp, ms, rp, rss, per_chunk,
                                                             storage_ptr<double>(partial));
      STRATA_KERNEL_CHECK();
    }
    param_finish_kernel<T><<<blocks_for(D), kThreads, 0, stream>>>(
        storage_ptr<double>(partial), chunks, D, storage_ptr<T>(out.dgamma), storage_ptr<T>(out.dbeta));
    STRATA_KERNEL_CHECK();
  });
  return out;
}

}  // namespace strata::cuda::layer_norm_impl

namespace strata::backend::cuda {

LayerNormForward layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  return ::strata::cuda::layer_norm_impl::forward(x, gamma, beta, eps);
}
LayerNormBackward layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                      const LayerNormForward& fwd) {
  return ::strata::cuda::layer_norm_impl::backward(dy, x, gamma, fwd);
}

}  // namespace strata::backend::cuda
