// Shared pieces of Strata's CUDA kernels (include from .cu files only):
// launch geometry, strided indexing of up to kMaxDims dims for N operands,
// and the storage <-> compute type mapping (f16/bf16 computed in f32).
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "strata/backend/cuda/context.h"
#include "strata/core/dtype.h"
#include "strata/core/half.h"
#include "strata/core/tensor.h"

namespace strata::cuda {

constexpr int kThreads = 256;

// `#pragma unroll` for device code only (the host compiler warns about it in
// __host__ __device__ functions).
#if defined(__CUDA_ARCH__)
#define STRATA_UNROLL _Pragma("unroll")
#else
#define STRATA_UNROLL
#endif
constexpr int kMaxDims = 8;

// Grid size for n elements at `threads` per block, capped (kernels use grid-stride loops).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  const int64_t cap = int64_t(context().sm_count > 0 ? context().sm_count : 80) * 32;
  if (b > cap) b = cap;
  return unsigned(b < 1 ? 1 : b);
}

// Compute type of a storage type: arithmetic on f16/bf16 happens in f32.
template <class T> struct ComputeOf { using type = T; };
template <> struct ComputeOf<Half> { using type = float; };
template <> struct ComputeOf<BFloat16> { using type = float; };
template <class T> using compute_t = typename ComputeOf<T>::type;

template <class T> __host__ __device__ __forceinline__ compute_t<T> load(const T* p) { return *p; }
template <> __host__ __device__ __forceinline__ float load<Half>(const Half* p) { return float(*p); }
template <> __host__ __device__ __forceinline__ float load<BFloat16>(const BFloat16* p) { return float(*p); }

template <class T, class V> __host__ __device__ __forceinline__ T store_cast(V v) { return T(v); }
template <> __host__ __device__ __forceinline__ Half store_cast<Half, float>(float v) { return Half(v); }
template <> __host__ __device__ __forceinline__ Half store_cast<Half, double>(double v) { return Half(float(v)); }
template <> __host__ __device__ __forceinline__ BFloat16 store_cast<BFloat16, float>(float v) { return BFloat16(v); }
template <> __host__ __device__ __forceinline__ BFloat16 store_cast<BFloat16, double>(double v) {
  return BFloat16(float(v));
}

// Element offsets of N operands sharing one logical shape (row-major linear
// index -> per-operand offset). Passed to kernels by value.
template <int N>
struct StridedIndexer {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t stride[N][kMaxDims];
  int64_t base[N];
  __host__ __device__ __forceinline__ void offsets(int64_t linear, int64_t (&out)[N]) const {
    STRATA_UNROLL
    for (int k = 0; k < N; ++k) out[k] = base[k];
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t i = linear % shape[d];
      linear /= shape[d];
      STRATA_UNROLL
      for (int k = 0; k < N; ++k) out[k] += i * stride[k][d];
    }
  }
};

// Builds an indexer for tensors of the same shape (strides may be 0 for
// broadcast operands). Adjacent dims that are contiguous in every operand are
// merged, so ranks above kMaxDims still work when they collapse.
template <int N>
StridedIndexer<N> make_indexer(const std::array<const Tensor*, N>& ts) {
  const Shape& shape = ts[0]->shape();
  StridedIndexer<N> ix;
  // merge from the innermost dim outwards
  std::vector<int64_t> sh;
  std::vector<std::array<int64_t, N>> st;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    if (shape[size_t(d)] == 1) continue;
    std::array<int64_t, N> s;
    for (int k = 0; k < N; ++k) s[size_t(k)] = ts[size_t(k)]->strides()[size_t(d)];
    if (!sh.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (st.back()[size_t(k)] * sh.back() != s[size_t(k)]) merge = false;
      if (merge) {
        sh.back() *= shape[size_t(d)];
        continue;
      }
    }
    sh.push_back(shape[size_t(d)]);
    st.push_back(s);
  }
  STRATA_CHECK(sh.size() <= size_t(kMaxDims)) << "CUDA kernels take tensors of at most " << kMaxDims
                                              << " non-mergeable dims, got " << shape_str(shape);
  ix.ndim = int(sh.size());
  for (int d = 0; d < ix.ndim; ++d) {  // back to outermost-first order
    const size_t src = sh.size() - 1 - size_t(d);
    ix.shape[d] = sh[src];
    for (int k = 0; k < N; ++k) ix.stride[k][d] = st[src][size_t(k)];
  }
  for (int k = 0; k < N; ++k) ix.base[k] = ts[size_t(k)]->offset();
  return ix;
}

// Offsets of the lanes along `axis` (the other dims, row-major) in each
// operand: kernels that walk one axis per thread or block index lanes with it.
template <int N>
StridedIndexer<N> lane_indexer(const std::array<const Tensor*, N>& ts, int64_t axis) {
  std::array<Tensor, N> views;
  std::array<const Tensor*, N> ptrs;
  for (int k = 0; k < N; ++k) {
    Shape s = ts[size_t(k)]->shape();
    Strides st = ts[size_t(k)]->strides();
    s.erase(s.begin() + axis);
    st.erase(st.begin() + axis);
    views[size_t(k)] = make_view(*ts[size_t(k)], s, st, ts[size_t(k)]->offset());
    ptrs[size_t(k)] = &views[size_t(k)];
  }
  return make_indexer<N>(ptrs);
}

// Grid-stride loop over [0, n) with 64-bit indices (grids are capped by blocks_for).
#define STRATA_GRID_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Raw element-0 pointer of the storage (not of the view): kernels add the
// indexer's offsets, which include the view offset.
template <class T> T* storage_ptr(const Tensor& t) { return static_cast<T*>(t.impl().storage->data()); }

}  // namespace strata::cuda
