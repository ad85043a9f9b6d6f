// Dropout keep-masks drawn from a Philox stream (see dropout.h for the contract).
#include "strata/backend/dropout.h"

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/dropout.h"
#endif

namespace strata::backend {

Tensor dropout_mask(const Shape& shape, DType dtype, double p, const PhiloxStream& stream, Device device) {
  if (device.is_cuda()) {
#ifdef STRATA_WITH_CUDA
    return cuda::dropout_mask(shape, dtype, p, stream, device);
#else
    STRATA_FAIL() << "dropout: mask on " << device.str() << " needs a build with CUDA=1";
#endif
  }
  STRATA_CHECK(p >= 0.0 && p <= 1.0) << "dropout: p must be in [0, 1], got " << p;
  Tensor mask = Tensor::empty(shape, dtype);
  dispatch_float(dtype, "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = mask.data<T>();
    const int64_t n = mask.numel();
    // p == 1 would make the scale 1/0; every element is dropped anyway.
    if (p == 1.0) {
      for (int64_t i = 0; i < n; ++i) out[i] = T(0);
      return;
    }
    if (p == 0.0) {
      for (int64_t i = 0; i < n; ++i) out[i] = T(1);
      return;
    }
    // Compare in f32 like PhiloxStream::bernoulli, so a kernel that takes p as
    // a float drops exactly the same elements.
    const float threshold = float(p);
    const T scale = T(1.0 / (1.0 - p));
    // One Philox call yields the words of 4 consecutive elements; calling
    // stream.uniform(i) per element would compute each block 4 times. This
    // mirrors PhiloxStream::u32's counter layout (the tests check the two agree).
    const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint64_t ub = uint64_t(b);
      const Philox4x32 w = philox4x32_10(uint32_t(ub), uint32_t(ub >> 32), uint32_t(stream.offset),
                                         uint32_t(stream.offset >> 32), uint32_t(stream.seed),
                                         uint32_t(stream.seed >> 32));
      const int64_t i0 = 4 * b;
      for (int64_t k = 0; k < 4 && i0 + k < n; ++k) {
        const float u = float(w.v[k] >> 8) * (1.0f / 16777216.0f);  // == stream.uniform(i0 + k)
        out[i0 + k] = u >= threshold ? scale : T(0);
      }
    }
  });
  return mask;
}

}  // namespace strata::backend
