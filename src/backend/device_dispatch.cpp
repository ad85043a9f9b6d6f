#include "strata/backend/device_dispatch.h"

namespace strata::backend {

bool on_cuda(const char* op, std::initializer_list<std::reference_wrapper<const Tensor>> ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    STRATA_CHECK(t.device() == first->device())
        << op << ": tensors on different devices (" << first->str() << " and " << t.str()
        << "); move them with .to(device) first";
  }
  if (!first || first->device().is_cpu()) return false;
#ifndef STRATA_WITH_CUDA
  STRATA_FAIL() << op << ": " << first->str() << " is on a GPU, but this build has no CUDA backend (build with CUDA=1)";
#endif
  return true;
}

}  // namespace strata::backend
