// One Context per device, created on first use and kept for the process
// lifetime (destroying handles during static destruction races the driver's
// own teardown).
#include <atomic>
#include <map>
#include <mutex>

#include "strata/backend/cuda/context.h"

namespace strata::cuda {

namespace {
std::mutex g_mu;
int g_device = 0;
std::map<int, Context*>& contexts() {
  static auto* m = new std::map<int, Context*>();
  return *m;
}
std::atomic<bool> g_poison{false};

Context* create(int index) {
  int count = device_count();
  STRATA_CHECK(index >= 0 && index < count) << "device cuda:" << index << " requested, but " << count
                                            << " CUDA devices are visible";
  auto* c = new Context();
  c->device = index;
  STRATA_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop;
  STRATA_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  c->sm_count = prop.multiProcessorCount;
  c->cc_major = prop.major;
  c->cc_minor = prop.minor;
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking));
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&c->comm, cudaStreamNonBlocking));
  STRATA_CUBLAS_CHECK(cublasCreate(&c->cublas));
  STRATA_CUBLAS_CHECK(cublasSetStream(c->cublas, c->compute));
  STRATA_CUBLAS_CHECK(cublasLtCreate(&c->cublaslt));
  c->lt_workspace_bytes = kLtWorkspaceBytes;
  STRATA_CUDA_CHECK(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes));
  // cuBLAS (non-Lt) calls share the same workspace policy: let it use its own
  // default, but pin the math mode so fp32 GEMMs stay fp32 (no TF32) and the
  // CPU-twin tests hold at fp32 tolerance.
  STRATA_CUBLAS_CHECK(cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
  return c;
}
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

void set_device(int index) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_device = index;
  STRATA_CUDA_CHECK(cudaSetDevice(index));
}

Context& context() {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& m = contexts();
  auto it = m.find(g_device);
  if (it == m.end()) it = m.emplace(g_device, create(g_device)).first;
  return *it->second;
}

cudnnHandle_t cudnn() {
  Context& c = context();
  std::lock_guard<std::mutex> lock(g_mu);
  if (!c.cudnn) {
    STRATA_CUDNN_CHECK(cudnnCreate(&c.cudnn));
    STRATA_CUDNN_CHECK(cudnnSetStream(c.cudnn, c.compute));
  }
  return c.cudnn;
}

void synchronize() { STRATA_CUDA_CHECK(cudaStreamSynchronize(compute_stream())); }

void set_allocation_poison(bool on) { g_poison = on; }
bool allocation_poison() { return g_poison; }

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

}  // namespace strata::cuda
