// GPU dropout keep-masks (contract: strata/backend/dropout.h; CPU twin:
// src/backend/cpu/dropout.cpp). One thread per Philox block of 4 elements,
// with exactly the CPU's counter layout and f32 comparison, so the mask is
// bit-identical to the CPU mask of the same (shape, dtype, p, stream).
#include "strata/backend/cuda/dropout.h"

#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::dropout_impl {
namespace {

// out[i] = keep if uniform(i) >= threshold else drop. Philox block b
// (counter = (lo b, hi b, lo offset, hi offset), key = seed) gives the words
// of elements 4b..4b+3, as PhiloxStream::u32 and the CPU loop lay them out.
template <class T>
__global__ void mask_kernel(T* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset, float threshold, T keep,
                            T drop) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t ub = uint64_t(b);
    const Philox4x32 w = philox4x32_10(uint32_t(ub), uint32_t(ub >> 32), uint32_t(offset), uint32_t(offset >> 32),
                                       uint32_t(seed), uint32_t(seed >> 32));
    const int64_t i0 = 4 * b;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (i0 + k >= n) break;
      const float u = float(w.v[k] >> 8) * (1.0f / 16777216.0f);  // == PhiloxStream::uniform(i0 + k)
      out[i0 + k] = u >= threshold ? keep : drop;
    }
  }
}

}  // namespace

Tensor mask(const Shape& shape, DType dtype, double p, const PhiloxStream& stream, Device device) {
  STRATA_CHECK(p >= 0.0 && p <= 1.0) << "dropout: p must be in [0, 1], got " << p;
  STRATA_CHECK(device.is_cuda()) << "dropout: the CUDA mask needs a CUDA device, got " << device.str();
  Tensor out = Tensor::empty(shape, dtype, device);
  auto launch = [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    if (n == 0) return;
    // p == 1 would make the scale 1/0; every element is dropped anyway (u < 1
    // never reaches the threshold 1). p == 0 keeps everything with scale 1.
    const T keep = store_cast<T>(p == 1.0 ? 0.0 : 1.0 / (1.0 - p));
    const T drop = store_cast<T>(0.0);
    mask_kernel<T><<<blocks_for((n + 3) / 4), kThreads, 0, compute_stream()>>>(
        storage_ptr<T>(out), n, stream.seed, stream.offset, float(p), keep, drop);
    STRATA_KERNEL_CHECK();
  };
  switch (dtype) {
    case DType::F32: launch(TypeTag<float>{}); break;
    case DType::F64: launch(TypeTag<double>{}); break;
    case DType::F16: launch(TypeTag<Half>{}); break;
    case DType::BF16: launch(TypeTag<BFloat16>{}); break;
    default: STRATA_FAIL() << "dropout: expected a f32, f64, f16 or bf16 mask, got " << dtype_name(dtype);
  }
  return out;
}

}  // namespace strata::cuda::dropout_impl

namespace strata::backend::cuda {

Tensor dropout_mask(const Shape& shape, DType dtype, double p, const PhiloxStream& stream, Device device) {
  return ::strata::cuda::dropout_impl::mask(shape, dtype, p, stream, device);
}

}  // namespace strata::backend::cuda
