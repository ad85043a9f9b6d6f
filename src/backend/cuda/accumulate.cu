// GPU dst += alpha * src and dst *= alpha on any views. 16-bit tensors are
// read into f32, updated there and rounded once on the store.
#include "strata/backend/cuda/accumulate.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda {
namespace {

// d and s may be the same storage when dst and src are the same view (each
// element reads itself before it is written), hence no __restrict__.
template <class T>
__global__ void axpy_flat_kernel(T* d, const T* s, compute_t<T> a, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    d[i] = store_cast<T>(load(d + i) + a * load(s + i));
}

// Operand 0 of the indexer is dst, operand 1 src.
template <class T>
__global__ void axpy_strided_kernel(T* d, const T* s, StridedIndexer<2> ix, compute_t<T> a, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    d[off[0]] = store_cast<T>(load(d + off[0]) + a * load(s + off[1]));
  }
}

template <class T>
__global__ void scale_flat_kernel(T* __restrict__ d, compute_t<T> a, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    d[i] = store_cast<T>(load(d + i) * a);
}

template <class T>
__global__ void scale_strided_kernel(T* d, StridedIndexer<1> ix, compute_t<T> a, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    d[off[0]] = store_cast<T>(load(d + off[0]) * a);
  }
}

// True when src and dst share bytes of one storage without being the same view.
bool partially_overlaps(const Tensor& dst, const Tensor& src) {
  if (dst.impl().storage != src.impl().storage) return false;
  if (dst.offset() == src.offset() && dst.strides() == src.strides()) return false;
  auto extent = [](const Tensor& t, int64_t& lo, int64_t& hi) {
    lo = hi = t.offset();
    for (int64_t d = 0; d < t.dim(); ++d) {
      const int64_t span = (t.shape()[size_t(d)] - 1) * t.strides()[size_t(d)];
      (span < 0 ? lo : hi) += span;
    }
  };
  int64_t dl, dh, sl, sh;
  extent(dst, dl, dh);
  extent(src, sl, sh);
  return dl <= sh && sl <= dh;
}

}  // namespace
}  // namespace strata::cuda

namespace strata::backend::cuda {

void accumulate_(const Tensor& dst, const Tensor& src_in, double alpha) {
  namespace cu = ::strata::cuda;
  STRATA_CHECK(dst.shape() == src_in.shape() && dst.dtype() == src_in.dtype())
      << "accumulate_: cannot add " << src_in.str() << " into " << dst.str();
  STRATA_CHECK(dst.device().is_cuda() && dst.device() == src_in.device())
      << "accumulate_: tensors on different devices (" << src_in.str() << " into " << dst.str() << ")";
  const int64_t n = dst.numel();
  // A src that shares some bytes with dst is read in full first, so the
  // result does not depend on the order threads write in.
  const Tensor src = cu::partially_overlaps(dst, src_in) ? src_in.clone() : src_in;
  ::strata::dispatch_floating(dst.dtype(), "accumulate_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n == 0) return;
    const cu::compute_t<T> a = cu::compute_t<T>(alpha);
    if (dst.is_contiguous() && src.is_contiguous()) {
      cu::axpy_flat_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          static_cast<T*>(dst.raw_data()), static_cast<const T*>(src.raw_data()), a, n);
    } else {
      cu::axpy_strided_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          cu::storage_ptr<T>(dst), cu::storage_ptr<T>(src), cu::make_indexer<2>({&dst, &src}), a, n);
    }
    STRATA_KERNEL_CHECK();
  });
}

void scale_(const Tensor& dst, double alpha) {
  namespace cu = ::strata::cuda;
  STRATA_CHECK(dst.device().is_cuda()) << "scale_: GPU kernel called for " << dst.str();
  const int64_t n = dst.numel();
  ::strata::dispatch_floating(dst.dtype(), "scale_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n == 0) return;
    const cu::compute_t<T> a = cu::compute_t<T>(alpha);
    if (dst.is_contiguous()) {
      cu::scale_flat_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          static_cast<T*>(dst.raw_data()), a, n);
    } else {
      cu::scale_strided_kernel<T><<<cu::blocks_for(n), cu::kThreads, 0, cu::compute_stream()>>>(
          cu::storage_ptr<T>(dst), cu::make_indexer<1>({&dst}), a, n);
    }
    STRATA_KERNEL_CHECK();
  });
}

}  // namespace strata::backend::cuda
