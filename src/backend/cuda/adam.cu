// Optimizer-step kernels (see the header). Adam runs train::detail::adam_element,
// the CPU loop's own arithmetic, so the two agree bit for bit. Reductions are
// deterministic: a fixed grid per tensor (independent of the GPU model), a
// fixed per-thread order and a fixed tree in shared memory, then one block
// sums the per-block partials in index order.
#include <algorithm>

#include "strata/backend/cuda/adam.h"
#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"
#include "strata/train/adam.h"

namespace strata::backend::cuda {

using strata::cuda::compute_stream;
using strata::cuda::kThreads;
using strata::cuda::load;
using strata::cuda::make_indexer;
using strata::cuda::storage_ptr;
using strata::cuda::store_cast;
using strata::cuda::StridedIndexer;
using strata::cuda::compute_t;

namespace {

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(blockDim.x) * gridDim.x; }

void check_on_gpu(const Tensor& t, const char* op, const char* what) {
  STRATA_CHECK(t.defined() && t.device().is_cuda()) << op << ": " << what << " " << t.str() << " is not on a GPU";
}

// ---------------------------------------------------------------- Adam

template <class T, class G>
__global__ void adam_contiguous_kernel(T* __restrict__ p, const G* __restrict__ g, T* __restrict__ m,
                                       T* __restrict__ v, int64_t n, train::detail::AdamCoef<T> c) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    T pi = p[i], mi = m[i], vi = v[i];
    train::detail::adam_element(pi, T(load(g + i)), mi, vi, c);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// Parameter and gradient through the indexer (operands 0 and 1, offsets from
// their storage bases); the state is contiguous, so element i is at i.
template <class T, class G>
__global__ void adam_strided_kernel(T* p, const G* g, T* __restrict__ m, T* __restrict__ v, StridedIndexer<2> ix,
                                    int64_t n, train::detail::AdamCoef<T> c) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    int64_t off[2];
    ix.offsets(i, off);
    T pi = p[off[0]], mi = m[i], vi = v[i];
    train::detail::adam_element(pi, T(load(g + off[1])), mi, vi, c);
    p[off[0]] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// ---------------------------------------------------------------- sum of squares

constexpr int kMaxPartials = 1024;  // blocks per tensor (fixed: same order on every GPU)

template <class T>
__global__ void sum_squares_contiguous_kernel(const T* __restrict__ x, int64_t n, double* __restrict__ partial) {
  double acc = 0.0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const double v = double(load(x + i));
    acc += v * v;
  }
  const double s = ::strata::cuda::block_reduce(acc, ::strata::cuda::ReduceSum{});
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

template <class T>
__global__ void sum_squares_strided_kernel(const T* x, StridedIndexer<1> ix, int64_t n, double* __restrict__ partial) {
  double acc = 0.0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    int64_t off[1];
    ix.offsets(i, off);
    const double v = double(load(x + off[0]));
    acc += v * v;
  }
  const double s = ::strata::cuda::block_reduce(acc, ::strata::cuda::ReduceSum{});
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block: out[0] = sum of partial[0..n) (thread t takes t, t + kThreads, ... in order).
__global__ void sum_partials_kernel(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partial[i];
  const double s = ::strata::cuda::block_reduce(acc, ::strata::cuda::ReduceSum{});
  if (threadIdx.x == 0) out[0] = s;
}

unsigned partial_blocks(int64_t n) {
  return unsigned(std::min<int64_t>(std::max<int64_t>((n + kThreads - 1) / kThreads, 1), kMaxPartials));
}

// ---------------------------------------------------------------- scale, finiteness

template <class T>
__global__ void scale_kernel(T* x, StridedIndexer<1> ix, int64_t n, compute_t<T> c) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    int64_t off[1];
    ix.offsets(i, off);
    x[off[0]] = store_cast<T>(load(x + off[0]) * c);
  }
}

template <class T>
__device__ __forceinline__ bool finite_value(T v) {
  return isfinite(v);
}

template <class T>
__global__ void nonfinite_kernel(const T* x, StridedIndexer<1> ix, int64_t n, int* __restrict__ flag) {
  bool bad = false;
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    int64_t off[1];
    ix.offsets(i, off);
    if (!finite_value(load(x + off[0]))) bad = true;
  }
  if (bad) *flag = 1;  // every writer stores the same value: no atomic needed
}

}  // namespace

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const AdamStepCoef& k) {
  const char* op = "Adam::step (cuda)";
  check_on_gpu(param, op, "parameter");
  check_on_gpu(grad, op, "gradient");
  check_on_gpu(exp_avg, op, "exp_avg");
  check_on_gpu(exp_avg_sq, op, "exp_avg_sq");
  STRATA_CHECK(grad.device() == param.device() && exp_avg.device() == param.device() &&
               exp_avg_sq.device() == param.device())
      << op << ": parameter " << param.str() << ", gradient " << grad.str() << " and state " << exp_avg.str()
      << " must be on one device";
  STRATA_CHECK(grad.shape() == param.shape() && exp_avg.shape() == param.shape() &&
               exp_avg_sq.shape() == param.shape())
      << op << ": gradient " << grad.str() << " or state " << exp_avg.str() << " does not match parameter "
      << param.str();
  STRATA_CHECK(exp_avg.dtype() == param.dtype() && exp_avg_sq.dtype() == param.dtype() && exp_avg.is_contiguous() &&
               exp_avg_sq.is_contiguous())
      << op << ": state " << exp_avg.str() << " / " << exp_avg_sq.str() << " must be contiguous " << param.str();
  const int64_t n = param.numel();
  if (n == 0) return;
  dispatch_float(param.dtype(), op, [&](auto ptag) {
    using T = typename decltype(ptag)::type;
    const train::detail::AdamCoef<T> c{T(k.b1),  T(k.one_minus_b1), T(k.b2),      T(k.one_minus_b2),
                                       T(k.eps), T(k.neg_decay),    T(k.neg_step)};
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    dispatch_floating(grad.dtype(), op, [&](auto gtag) {
      using G = typename decltype(gtag)::type;
      const unsigned blocks = strata::cuda::blocks_for(n);
      if (param.is_contiguous() && grad.is_contiguous()) {
        adam_contiguous_kernel<T, G><<<blocks, kThreads, 0, compute_stream()>>>(
            static_cast<T*>(param.raw_data()), static_cast<const G*>(grad.raw_data()), m, v, n, c);
      } else {
        const auto ix = make_indexer<2>({&param, &grad});
        adam_strided_kernel<T, G><<<blocks, kThreads, 0, compute_stream()>>>(storage_ptr<T>(param),
                                                                              storage_ptr<const G>(grad), m, v, ix, n, c);
      }
      STRATA_KERNEL_CHECK();
    });
  });
}

double sum_squares(const std::vector<Tensor>& tensors) {
  const char* op = "sum_squares (cuda)";
  std::vector<const Tensor*> live;
  int64_t total_blocks = 0;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    check_on_gpu(t, op, "tensor");
    if (t.numel() == 0) continue;
    STRATA_CHECK(live.empty() || t.device() == live.front()->device())
        << op << ": tensors on different devices (" << live.front()->str() << " and " << t.str() << ")";
    live.push_back(&t);
    total_blocks += partial_blocks(t.numel());
  }
  if (live.empty()) return 0.0;
  // partials[0 .. total_blocks) per block, then the total at [total_blocks].
  Tensor scratch = Tensor::empty({total_blocks + 1}, DType::F64, live.front()->device());
  double* partial = scratch.data<double>();
  int64_t at = 0;
  for (const Tensor* tp : live) {
    const Tensor& t = *tp;
    const unsigned blocks = partial_blocks(t.numel());
    dispatch_floating(t.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if (t.is_contiguous()) {
        sum_squares_contiguous_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(
            static_cast<const T*>(t.raw_data()), t.numel(), partial + at);
      } else {
        const auto ix = make_indexer<1>({&t});
        sum_squares_strided_kernel<T><<<blocks, kThreads, 0, compute_stream()>>>(storage_ptr<const T>(t), ix,
                                                                                  t.numel(), partial + at);
      }
      STRATA_KERNEL_CHECK();
    });
    at += blocks;
  }
  sum_partials_kernel<<<1, kThreads, 0, compute_stream()>>>(partial, total_blocks, partial + total_blocks);
  STRATA_KERNEL_CHECK();
  double host = 0.0;
  STRATA_CUDA_CHECK(
      cudaMemcpyAsync(&host, partial + total_blocks, sizeof(double), cudaMemcpyDeviceToHost, compute_stream()));
  strata::cuda::synchronize();
  return host;
}

void scale_grad(const Tensor& x, double coef) {
  const char* op = "scale_grads (cuda)";
  check_on_gpu(x, op, "tensor");
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto ix = make_indexer<1>({&x});
    scale_kernel<T><<<strata::cuda::blocks_for(n), kThreads, 0, compute_stream()>>>(storage_ptr<T>(x), ix, n,
                                                                                    compute_t<T>(coef));
    STRATA_KERNEL_CHECK();
  });
}

bool all_finite(const std::vector<Tensor>& tensors) {
  const char* op = "all_finite (cuda)";
  Tensor flag;
  for (const Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0 || !is_floating(t.dtype())) continue;
    check_on_gpu(t, op, "tensor");
    if (!flag.defined()) {
      flag = Tensor::empty({1}, DType::I32, t.device());
      STRATA_CUDA_CHECK(cudaMemsetAsync(flag.raw_data(), 0, sizeof(int), compute_stream()));
    }
    STRATA_CHECK(t.device() == flag.device())
        << op << ": tensors on different devices (" << flag.device().str() << " and " << t.str() << ")";
    dispatch_floating(t.dtype(), op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const auto ix = make_indexer<1>({&t});
      nonfinite_kernel<T><<<strata::cuda::blocks_for(t.numel()), kThreads, 0, compute_stream()>>>(
          storage_ptr<const T>(t), ix, t.numel(), flag.data<int32_t>());
      STRATA_KERNEL_CHECK();
    });
  }
  if (!flag.defined()) return true;
  int host = 0;
  STRATA_CUDA_CHECK(cudaMemcpyAsync(&host, flag.raw_data(), sizeof(int), cudaMemcpyDeviceToHost, compute_stream()));
  strata::cuda::synchronize();
  return host == 0;
}

}  // namespace strata::backend::cuda
