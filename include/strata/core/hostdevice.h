// STRATA_HD marks code compiled for both the CPU and (under nvcc) the GPU, so
// element-wise math, RNG and conversions have a single definition.
#pragma once
#if defined(__CUDACC__)
#define STRATA_HD __host__ __device__ __forceinline__
#else
#define STRATA_HD inline
#endif
