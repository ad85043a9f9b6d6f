// Per-process GPU state, created once on first use: the device, one compute
// stream (every kernel and library call of a step goes there, so stream order
// makes freed allocator blocks safe to reuse at once), one communication
// stream (NCCL), and the cuBLAS, cuBLASLt and cuDNN handles with their
// workspaces. Only for CUDA builds (STRATA_WITH_CUDA).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>

#include "strata/core/cuda_check.h"

namespace strata::cuda {

struct Context {
  int device = 0;
  cudaStream_t compute = nullptr;
  cudaStream_t comm = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  void* lt_workspace = nullptr;  // cuBLASLt scratch (kLtWorkspaceBytes)
  size_t lt_workspace_bytes = 0;
  cudnnHandle_t cudnn = nullptr;  // created on first cudnn() call
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
};

constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

// Number of visible CUDA devices; 0 (no throw) when there is no driver or GPU.
int device_count();
bool available();

// Selects the device this process uses (cuda:<index>); call before the first
// tensor is created on it. Default: device 0.
void set_device(int index);

// The context of the selected device (created on first call).
Context& context();
inline cudaStream_t compute_stream() { return context().compute; }
inline cudaStream_t comm_stream() { return context().comm; }
cudnnHandle_t cudnn();

// Waits for all work queued on the compute stream (and reports its errors).
void synchronize();

// Debug aid for the GPU tests: when on, every block the CUDA allocator hands
// out is first filled with 0xFF bytes (NaN for floats, -1 for integers), so a
// kernel that leaves an output element unwritten fails its comparison.
void set_allocation_poison(bool on);
bool allocation_poison();

const char* cublas_status_name(cublasStatus_t s);

}  // namespace strata::cuda

#define STRATA_CUBLAS_CHECK(call)                                                                       \
  do {                                                                                                  \
    cublasStatus_t strata_st_ = (call);                                                                 \
    STRATA_CHECK(strata_st_ == CUBLAS_STATUS_SUCCESS) << #call << " failed at " << __FILE__ << ":"      \
                                                      << __LINE__ << ": "                               \
                                                      << ::strata::cuda::cublas_status_name(strata_st_); \
  } while (0)

#define STRATA_CUDNN_CHECK(call)                                                                    \
  do {                                                                                              \
    cudnnStatus_t strata_st_ = (call);                                                              \
    STRATA_CHECK(strata_st_ == CUDNN_STATUS_SUCCESS) << #call << " failed at " << __FILE__ << ":"   \
                                                     << __LINE__ << ": " << cudnnGetErrorString(strata_st_); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at the call site.
#define STRATA_KERNEL_CHECK() STRATA_CUDA_CHECK(cudaGetLastError())
