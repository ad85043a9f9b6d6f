#include "strata/backend/accumulate.h"

#include "strata/core/dispatch.h"
#include "strata/core/strided.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/accumulate.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

void accumulate_(const Tensor& dst, const Tensor& src, double alpha) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("accumulate_", {dst, src})) return cuda::accumulate_(dst, src, alpha);
#endif
  STRATA_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype())
      << "accumulate_: cannot add " << src.str() << " into " << dst.str();
  STRATA_CHECK(dst.device().is_cpu() && src.device().is_cpu()) << "accumulate_: CPU tensors expected";
  dispatch_float(dst.dtype(), "accumulate_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dst.impl().storage->data());
    const T* s = static_cast<const T*>(src.impl().storage->data());
    const T a = T(alpha);
    for_each_run<2>(dst.shape(), {dst.strides().data(), src.strides().data()}, {dst.offset(), src.offset()},
                    [&](const StridedRun<2>& r) {
                      T* dp = d + r.offset[0];
                      const T* sp = s + r.offset[1];
                      if (r.stride[0] == 1 && r.stride[1] == 1) {
                        if (a == T(1))
                          for (int64_t i = 0; i < r.length; ++i) dp[i] += sp[i];
                        else
                          for (int64_t i = 0; i < r.length; ++i) dp[i] += a * sp[i];
                      } else {
                        for (int64_t i = 0; i < r.length; ++i) dp[i * r.stride[0]] += a * sp[i * r.stride[1]];
                      }
                    });
  });
}

void scale_(const Tensor& dst, double alpha) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("scale_", {dst})) return cuda::scale_(dst, alpha);
#endif
  STRATA_CHECK(dst.device().is_cpu()) << "scale_: CPU tensor expected";
  dispatch_float(dst.dtype(), "scale_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dst.impl().storage->data());
    const T a = T(alpha);
    for_each_run<1>(dst.shape(), {dst.strides().data()}, {dst.offset()}, [&](const StridedRun<1>& r) {
      T* dp = d + r.offset[0];
      for (int64_t i = 0; i < r.length; ++i) dp[i * r.stride[0]] *= a;
    });
  });
}

}  // namespace strata::backend
