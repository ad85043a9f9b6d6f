#include "strata/nn/autocast.h"

#include "strata/autograd/ops.h"

namespace strata::nn {

namespace {
thread_local DType g_compute = DType::F32;
}

DType autocast_dtype() { return g_compute; }

bool autocast_enabled() { return g_compute == DType::BF16 || g_compute == DType::F16; }

AutocastGuard::AutocastGuard(DType dtype) : prev_(g_compute) {
  STRATA_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16)
      << "AutocastGuard: the compute dtype must be f32, bf16 or f16, got " << dtype_name(dtype);
  g_compute = dtype;
}

AutocastGuard::~AutocastGuard() { g_compute = prev_; }

Tensor autocast(const Tensor& x) {
  if (!autocast_enabled() || !x.defined() || !is_floating(x.dtype()) || x.dtype() == g_compute) return x;
  return cast(x, g_compute);
}

}  // namespace strata::nn
