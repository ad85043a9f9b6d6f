// Checks a CUDA runtime call and throws strata::Error naming the call site
// and CUDA's description of the failure. Only for CUDA builds.
#pragma once
#include <cuda_runtime.h>

#include "strata/core/error.h"

#define STRATA_CUDA_CHECK(call)                                                                    \
  do {                                                                                             \
    cudaError_t strata_err_ = (call);                                                              \
    STRATA_CHECK(strata_err_ == cudaSuccess) << #call << " failed at " << __FILE__ << ":" << __LINE__ \
                                             << ": " << cudaGetErrorString(strata_err_);           \
  } while (0)
