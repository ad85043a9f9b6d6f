// GPU fused label-smoothed cross-entropy (contract: strata/backend/cross_entropy.h
// and strata/backend/cuda/cross_entropy.h; CPU twin: src/backend/cpu/cross_entropy.cpp).
//
// Forward: one block per row computes the max m, then in one pass
//   se = sum_v exp(x_v - m)   and   sd = sum_v (m - x_v),
// both sums of non-negative terms (se in f32 for f32/f16/bf16 logits, f64 for
// f64; sd, which grows to ~V times its terms, in double), from which, with
// log(se) = lse - m,
//   nll_row    = lse - x_t       = (m - x_t) + log(se)
//   smooth_row = V lse - sum x_v = V log(se) + sd
// The CPU's V*lse - sum(x) is a difference of two sums of size ~V*|x|; the
// form above is the same quantity built from non-negative terms only, so it
// does not cancel. The row's loss a*nll + b*smooth and nll are stored per row
// in double, and a single block adds them in a fixed order (no atomics):
// repeated runs agree bit for bit.
// That block also counts the tokens and finds the first target outside
// [0, V); those three integers are the forward's one device-to-host copy.
//
// Backward: d loss_row / d x_v = (a + b V) p_v - a [v = t] - b, scaled by the
// upstream gradient, which the kernel reads from device memory (no sync).
#include "strata/backend/cuda/cross_entropy.h"

#include <limits>

#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::cross_entropy_impl {
namespace {

constexpr int kFinishThreads = 1024;

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }

// One block per row. lse has the statistics type compute_t<T>.
template <class T, class I>
__global__ void forward_rows_kernel(const T* __restrict__ x, int64_t s0, int64_t s1, int64_t N, int64_t V,
                                    const I* __restrict__ target, int64_t ts, double a, double b,
                                    int64_t ignore_index, compute_t<T>* __restrict__ lse,
                                    double* __restrict__ row_loss, double* __restrict__ row_nll) {
  using C = compute_t<T>;
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* xr = x + i * s0;
    C m = -std::numeric_limits<C>::infinity();
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const C xv = load(xr + v * s1);
      m = xv > m ? xv : m;
    }
    m = block_reduce(m, ReduceMax{});
    C se = 0;
    double sd = 0;  // ~V times larger than its terms' spread: double, as cheap as f32 here (bandwidth-bound)
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const C xv = load(xr + v * s1);
      se += dexp(xv - m);
      sd += double(m - xv);
    }
    se = block_reduce(se, ReduceSum{});
    sd = block_reduce(sd, ReduceSum{});
    if (threadIdx.x == 0) {
      const C log_se = dlog(se);
      lse[i] = m + log_se;
      const int64_t t = int64_t(target[i * ts]);
      double loss = 0, nll = 0;
      // an out-of-range target is reported by the finish kernel; never read x[t] for it
      if (t != ignore_index && t >= 0 && t < V) {
        nll = (double(m) - double(load(xr + t * s1))) + double(log_se);
        const double smooth = double(V) * double(log_se) + sd;
        loss = a * nll + b * smooth;
      }
      row_loss[i] = loss;
      row_nll[i] = nll;
    }
  }
}

// One block: loss/nll sums in a fixed order, the token count and the first
// bad target. info = {tokens, first bad row or -1, its target}.
// __launch_bounds__: a 1024-thread block fits the register file only at <= 64
// registers per thread; without the bound the launch can fail with "too many
// resources requested" if the compiler uses more.
template <class I, class O>
__global__ void __launch_bounds__(kFinishThreads)
    finish_kernel(const I* __restrict__ target, int64_t ts, int64_t N, int64_t V, int64_t ignore_index,
                  const double* __restrict__ row_loss, const double* __restrict__ row_nll, O* __restrict__ loss_sum,
                  O* __restrict__ nll_sum, int64_t* __restrict__ info) {
  double loss = 0, nll = 0;
  long long tokens = 0, bad = N;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const int64_t t = int64_t(target[i * ts]);
    if (t != ignore_index) {
      if (t >= 0 && t < V) ++tokens;
      else if (i < bad) bad = i;
    }
    loss += row_loss[i];
    nll += row_nll[i];
  }
  loss = block_reduce(loss, ReduceSum{});
  nll = block_reduce(nll, ReduceSum{});
  tokens = block_reduce(tokens, ReduceSum{});
  bad = block_reduce(bad, ReduceMin{});
  if (threadIdx.x == 0) {
    *loss_sum = store_cast<O>(loss);
    *nll_sum = store_cast<O>(nll);
    info[0] = tokens;
    info[1] = bad < N ? bad : -1;
    info[2] = bad < N ? int64_t(target[bad * ts]) : 0;
  }
}

// The upstream gradient, any dtype, read once per thread.
__device__ double load_scalar(const void* p, DType dt) {
  switch (dt) {
    case DType::F64: return *static_cast<const double*>(p);
    case DType::F16: return double(float(*static_cast<const Half*>(p)));
    case DType::BF16: return double(float(*static_cast<const BFloat16*>(p)));
    case DType::I32: return double(*static_cast<const int32_t*>(p));
    case DType::I64: return double(*static_cast<const int64_t*>(p));
    default: return double(*static_cast<const float*>(p));
  }
}

// One block per row of the contiguous [N, V] gradient.
template <class T, class I>
__global__ void backward_kernel(const void* grad_loss, DType grad_dtype, const T* __restrict__ x, int64_t s0,
                                int64_t s1, int64_t N, int64_t V, const I* __restrict__ target, int64_t ts,
                                const compute_t<T>* __restrict__ lse, int64_t ls, double a, double b,
                                int64_t ignore_index, T* __restrict__ grad) {
  using C = compute_t<T>;
  const double g = load_scalar(grad_loss, grad_dtype);
  // rounded to the compute type as the CPU rounds them to T
  const C scale_p = C(g * (a + b * double(V))), shift = C(-g * b), hit = C(-g * a);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    T* gr = grad + i * V;
    const int64_t t = int64_t(target[i * ts]);
    if (t == ignore_index) {
      const T zero = store_cast<T>(C(0));
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) gr[v] = zero;
      continue;
    }
    const T* xr = x + i * s0;
    const C l = lse[i * ls];
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      C val = scale_p * dexp(load(xr + v * s1) - l) + shift;
      if (v == t) val += hit;
      gr[v] = store_cast<T>(val);
    }
  }
}

// ---------------------------------------------------------------- host helpers

DType stat_dtype(DType x) { return x == DType::F16 || x == DType::BF16 ? DType::F32 : x; }

void check_inputs(const Tensor& logits, const Tensor& target, const char* op) {
  STRATA_CHECK(logits.dim() == 2) << op << ": logits must be [tokens, vocab], got " << logits.str();
  STRATA_CHECK(target.dim() == 1 && target.size(0) == logits.size(0))
      << op << ": target " << target.str() << " does not match logits " << logits.str();
}

int row_threads(int64_t V) {
  const int64_t t = (V + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > 256 ? 256 : t));
}
unsigned row_blocks(int64_t rows) {
  const int64_t cap = int64_t(context().sm_count > 0 ? context().sm_count : 80) * 32;
  return unsigned(rows < cap ? rows : cap);
}

}  // namespace

backend::CrossEntropyForward forward(const Tensor& logits, const Tensor& target, double a, double b,
                                     int64_t ignore_index) {
  const char* op = "label_smoothed_cross_entropy";
  check_inputs(logits, target, op);
  const int64_t N = logits.size(0), V = logits.size(1);
  STRATA_CHECK(V > 0 || N == 0) << op << ": logits " << logits.str() << " have an empty vocabulary";
  backend::CrossEntropyForward out;
  Tensor info = Tensor::empty({3}, DType::I64, logits.device());
  dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = compute_t<T>;
    dispatch_index(target.dtype(), op, [&](auto itag) {
      using I = typename decltype(itag)::type;
      const DType sd = stat_dtype(logits.dtype());
      out.lse = Tensor::empty({N}, sd, logits.device());
      out.loss_sum = Tensor::empty({}, sd, logits.device());
      out.nll_sum = Tensor::empty({}, sd, logits.device());
      Tensor rows = Tensor::empty({2 * (N > 0 ? N : 1)}, DType::F64, logits.device());
      double* row_loss = storage_ptr<double>(rows);
      double* row_nll = row_loss + N;
      const I* tp = storage_ptr<I>(target) + target.offset();
      const int64_t ts = target.strides()[0];
      cudaStream_t stream = compute_stream();
      if (N > 0) {
        forward_rows_kernel<T, I><<<row_blocks(N), row_threads(V), 0, stream>>>(
            storage_ptr<T>(logits) + logits.offset(), logits.strides()[0], logits.strides()[1], N, V, tp, ts, a, b,
            ignore_index, storage_ptr<S>(out.lse), row_loss, row_nll);
        STRATA_KERNEL_CHECK();
      }
      finish_kernel<I, S><<<1, kFinishThreads, 0, stream>>>(tp, ts, N, V, ignore_index, row_loss, row_nll,
                                                            storage_ptr<S>(out.loss_sum),
                                                            storage_ptr<S>(out.nll_sum), storage_ptr<int64_t>(info));
      STRATA_KERNEL_CHECK();
    });
  });
  // The one host synchronisation of the op (see the header): tokens is a host value.
  const Tensor host = info.to(Device::cpu());
  const int64_t* h = host.data<int64_t>();
  STRATA_CHECK(h[1] < 0) << op << ": target " << h[2] << " at row " << h[1] << " outside the vocabulary of " << V;
  out.tokens = h[0];
  return out;
}

Tensor backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse, double a,
                double b, int64_t ignore_index) {
  const char* op = "label_smoothed_cross_entropy backward";
  check_inputs(logits, target, op);
  const int64_t N = logits.size(0), V = logits.size(1);
  STRATA_CHECK(grad_loss.numel() == 1) << op << ": grad_loss " << grad_loss.str() << " must have one element";
  STRATA_CHECK(lse.shape() == Shape{N} && lse.dtype() == stat_dtype(logits.dtype()))
      << op << ": lse " << lse.str() << " does not match logits " << logits.str() << " (expected " << N
      << " values of " << dtype_name(stat_dtype(logits.dtype())) << ")";
  Tensor grad = Tensor::empty({N, V}, logits.dtype(), logits.device());
  dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using S = compute_t<T>;
    dispatch_index(target.dtype(), op, [&](auto itag) {
      using I = typename decltype(itag)::type;
      if (N == 0 || V == 0) return;
      const char* gp = static_cast<const char*>(grad_loss.impl().storage->data()) +
                       grad_loss.offset() * int64_t(dtype_size(grad_loss.dtype()));
      backward_kernel<T, I><<<row_blocks(N), row_threads(V), 0, compute_stream()>>>(
          gp, grad_loss.dtype(), storage_ptr<T>(logits) + logits.offset(), logits.strides()[0],
          logits.strides()[1], N, V, storage_ptr<I>(target) + target.offset(), target.strides()[0],
          storage_ptr<S>(lse) + lse.offset(), lse.strides()[0], a, b, ignore_index, storage_ptr<T>(grad));
      STRATA_KERNEL_CHECK();
    });
  });
  return grad;
}

}  // namespace strata::cuda::cross_entropy_impl

namespace strata::backend::cuda {

CrossEntropyForward label_smoothed_ce_forward(const Tensor& logits, const Tensor& target, double a, double b,
                                              int64_t ignore_index) {
  return ::strata::cuda::cross_entropy_impl::forward(logits, target, a, b, ignore_index);
}
Tensor label_smoothed_ce_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                                  const Tensor& lse, double a, double b, int64_t ignore_index) {
  return ::strata::cuda::cross_entropy_impl::backward(grad_loss, logits, target, lse, a, b, ignore_index);
}

}  // namespace strata::backend::cuda
