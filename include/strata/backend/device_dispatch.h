// Device routing of backend ops: each public backend entry point asks
// on_cuda() whether its tensors live on a GPU and, in CUDA builds, forwards
// to strata::backend::cuda::<op>. Mixed devices are an error naming the op.
#pragma once
#include <functional>
#include <initializer_list>

#include "strata/core/tensor.h"

namespace strata::backend {

// True when the (defined) tensors are on a CUDA device; throws naming `op`
// when they are on different devices, or on a GPU in a build without CUDA.
bool on_cuda(const char* op, std::initializer_list<std::reference_wrapper<const Tensor>> ts);

}  // namespace strata::backend
