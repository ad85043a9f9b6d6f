// GPU copy (any strides, any dtype pair) and fill behind Tensor::copy_ and
// Tensor::fill_. The element conversion is the CPU one (load() widens
// f16/bf16 to f32, store_cast() narrows exactly as from_compute does), so a
// cast gives the same bits on both devices.
#include <cstring>

#include "strata/backend/cuda/copy.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda {
namespace {

template <class D, class S>
__device__ __forceinline__ D cast_elem(S s) {
  return store_cast<D>(load(&s));
}

template <class D, class S>
__global__ void copy_flat_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    dst[i] = cast_elem<D>(src[i]);
}

// Operand 0 of the indexer is dst, operand 1 is src (offsets from the storage bases).
template <class D, class S>
__global__ void copy_strided_kernel(D* dst, const S* src, StridedIndexer<2> ix, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    dst[off[0]] = cast_elem<D>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_flat_kernel(T* __restrict__ dst, T v, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    dst[i] = v;
}

template <class T>
__global__ void fill_strided_kernel(T* dst, T v, StridedIndexer<1> ix, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    dst[off[0]] = v;
  }
}

// Byte range [lo, hi) of the storage a view can touch.
void byte_extent(const Tensor& t, int64_t& lo, int64_t& hi) {
  int64_t a = t.offset(), b = t.offset();
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t span = (t.shape()[size_t(d)] - 1) * t.strides()[size_t(d)];
    if (span < 0) a += span;
    else b += span;
  }
  const int64_t es = int64_t(dtype_size(t.dtype()));
  lo = a * es;
  hi = (b + 1) * es;
}

// True when writing dst could change src elements before they are read.
bool overlaps(const Tensor& dst, const Tensor& src) {
  if (dst.impl().storage != src.impl().storage) return false;
  int64_t dl, dh, sl, sh;
  byte_extent(dst, dl, dh);
  byte_extent(src, sl, sh);
  return dl < sh && sl < dh;
}

bool same_view(const Tensor& a, const Tensor& b) {
  return a.impl().storage == b.impl().storage && a.offset() == b.offset() && a.dtype() == b.dtype() &&
         a.strides() == b.strides();
}

void copy_impl(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                                      compute_stream()));
    return;
  }
  dispatch_dtype(dst.dtype(), "copy_", [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_dtype(src.dtype(), "copy_", [&](auto stag) {
      using S = typename decltype(stag)::type;
      if (dst.is_contiguous() && src.is_contiguous()) {
        copy_flat_kernel<D, S><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
            static_cast<D*>(dst.raw_data()), static_cast<const S*>(src.raw_data()), n);
      } else {
        copy_strided_kernel<D, S><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
            storage_ptr<D>(dst), storage_ptr<S>(src), make_indexer<2>({&dst, &src}), n);
      }
      STRATA_KERNEL_CHECK();
    });
  });
}

}  // namespace
}  // namespace strata::cuda

namespace strata::backend::cuda {

void copy_(const Tensor& dst, const Tensor& src) {
  STRATA_CHECK(dst.shape() == src.shape()) << "copy_: source " << src.str() << " does not match destination "
                                           << dst.str();
  STRATA_CHECK(dst.device().is_cuda() && dst.device() == src.device())
      << "copy_: GPU kernel needs both tensors on one GPU, got " << src.str() << " -> " << dst.str();
  if (dst.numel() == 0 || ::strata::cuda::same_view(dst, src)) return;
  if (::strata::cuda::overlaps(dst, src)) {
    // Read everything first (as the CPU's memmove does) so no element is
    // overwritten before it is copied.
    Tensor tmp = Tensor::empty(src.shape(), src.dtype(), src.device());
    ::strata::cuda::copy_impl(tmp, src);
    ::strata::cuda::copy_impl(dst, tmp);
    return;
  }
  ::strata::cuda::copy_impl(dst, src);
}

void fill_(const Tensor& dst, double value) {
  STRATA_CHECK(dst.device().is_cuda()) << "fill_: GPU kernel called for " << dst.str();
  const int64_t n = dst.numel();
  if (n == 0) return;
  dispatch_dtype(dst.dtype(), "fill_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    namespace cu = ::strata::cuda;
    const T v = from_compute<T>(value);  // the CPU conversion, done once on the host
    if (dst.is_contiguous()) {
      const T zero{};
      if (std::memcmp(&v, &zero, sizeof(T)) == 0) {  // all-zero bits (not -0.0): a memset
        STRATA_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), cu::compute_stream()));
        return;
      }
      cu::fill_flat_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          static_cast<T*>(dst.raw_data()), v, n);
    } else {
      cu::fill_strided_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          cu::storage_ptr<T>(dst), v, cu::make_indexer<1>({&dst}), n);
    }
    STRATA_KERNEL_CHECK();
  });
}

}  // namespace strata::backend::cuda
