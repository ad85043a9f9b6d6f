// Block-wide reduction shared by Strata's CUDA kernels (include from .cu files
// only; the "one block per row/lane" kernels of softmax, layer_norm,
// cross_entropy and reduce use it).
//
//   const float m = block_reduce(thread_max, ReduceMax{});   // in every thread
//   const double s = block_reduce(thread_sum, ReduceSum{});
//
// block_reduce(v, op) combines one value per thread over the whole thread
// block and returns the result in EVERY thread (a broadcast), so a kernel can
// use a row statistic right away.
//
// How: each warp folds its 32 values with a butterfly of __shfl_xor_sync
// (offsets 16, 8, 4, 2, 1); lane 0 of each warp stores its warp's value in a
// 32-slot shared array; after a barrier every thread folds slots 0, 1, ...,
// W-1 (W = blockDim.x / 32) in that order. Only lane 0's butterfly result is
// used, so every thread returns the same bits even for an op that is not
// commutative in its NaN handling (see ReduceMax).
//
// Caller's contract:
//  - 1-D blocks with blockDim.x a multiple of 32 (so every warp is full: the
//    full-mask shuffles are undefined with missing lanes) and <= 1024 (at most
//    32 warps, the size of the shared array). Launch sizes like
//    "round n up to 32, clamp to [32, 256]" satisfy this.
//  - Every thread of the block calls it, from block-uniform control flow: it
//    contains __syncthreads() and full-warp shuffles. Threads without data
//    pass the op's identity (0 for ReduceSum, -inf for ReduceMax, ...); they
//    must not return early.
//  - T is an arithmetic type that __shfl_xor_sync takes (int, long long, float,
//    double, ...). f16/bf16 data is reduced in its f32 compute type.
//  - op(a, b) is associative (up to rounding for floating sums).
//
// Determinism: the combination tree depends only on blockDim.x, so for a fixed
// block size the result is bit-identical run to run (no atomics), floating
// sums included.
//
// Back-to-back calls (and calls inside a loop over rows) are safe: the barrier
// at the start of each call makes sure every thread has read the previous
// call's slots before lane 0 of a warp overwrites them. Different (T, Op)
// instantiations use different shared arrays.
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

namespace strata::cuda {

constexpr unsigned kFullWarpMask = 0xffffffffu;

struct ReduceSum {
  template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
// b > a ? b : a, like the CPU's `x > m ? x : m`: a NaN b never replaces a. To
// get a NaN-ignoring maximum, keep NaNs out of the per-thread values (fold them
// with the same expression starting from -inf, as the softmax kernels do).
struct ReduceMax {
  template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return b > a ? b : a; }
};
struct ReduceMin {
  template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return b < a ? b : a; }
};

// Combines v over the 32 lanes of a full warp; lane 0 holds op(...) in a fixed
// order (the other lanes hold the same multiset folded in other orders).
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullWarpMask, v, o));
  return v;
}

// See the file comment for the contract.
template <class T, class Op>
__device__ T block_reduce(T v, Op op) {
  static_assert(std::is_arithmetic_v<T>, "block_reduce: reduce an arithmetic type (f16/bf16 in f32)");
  __shared__ T warp_vals[32];
  v = warp_reduce(v, op);
  __syncthreads();  // every thread has read the previous call's warp_vals
  if ((threadIdx.x & 31u) == 0) warp_vals[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = warp_vals[0];
  const int warps = int(blockDim.x >> 5);
  for (int w = 1; w < warps; ++w) r = op(r, warp_vals[w]);
  return r;
}

}  // namespace strata::cuda
