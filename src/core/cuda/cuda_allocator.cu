// Caching device allocator: cudaMalloc only on a cache miss, so a training
// step in steady state makes no cudaMalloc/cudaFree calls (they synchronise
// the device). Same size classes as the CPU allocator; 256-byte alignment is
// what cudaMalloc already guarantees.
#include <map>
#include <mutex>
#include <vector>

#include "strata/core/allocator.h"
#include "strata/backend/cuda/context.h"
#include "strata/core/cuda_check.h"

namespace strata {

namespace {
// Makes `index` the current device for a scope and restores the caller's on
// exit: cudaSetDevice is sticky per thread, and the compute stream's kernels
// must keep launching on the device selected by cuda::set_device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    STRATA_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != index) STRATA_CUDA_CHECK(cudaSetDevice(index));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

class CudaCachingAllocator final : public Allocator {
 public:
  explicit CudaCachingAllocator(int index) : index_(index) {}
  void* allocate(size_t nbytes) override {
    size_t cls = allocator_size_class(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.num_allocs;
    void* p = nullptr;
    auto& list = free_[cls];
    if (!list.empty()) {
      p = list.back();
      list.pop_back();
      ++stats_.num_cache_hits;
    } else {
      DeviceGuard guard(index_);
      cudaError_t err = cudaMalloc(&p, cls);
      if (err != cudaSuccess) {  // release the cache and retry once before giving up
        (void)cudaGetLastError();
        release_locked();
        STRATA_CUDA_CHECK(cudaMalloc(&p, cls));
      }
      stats_.bytes_reserved += cls;
    }
    if (cuda::allocation_poison()) STRATA_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, cls, cuda::compute_stream()));
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    size_t cls = allocator_size_class(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    free_[cls].push_back(p);
    stats_.bytes_in_use -= cls;
  }
  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    DeviceGuard guard(index_);
    release_locked();
  }
  Device device() const override { return Device::cuda(index_); }

 private:
  // Cached blocks were freed on the host while queued kernels may still use
  // them (reuse is safe only in stream order): wait for the device before
  // handing them back rather than rely on cudaFree's implicit synchronisation.
  // Call with index_ current.
  void release_locked() {
    if (free_.empty()) return;
    STRATA_CUDA_CHECK(cudaDeviceSynchronize());
    cudaError_t first = cudaSuccess;
    for (auto& kv : free_)
      for (void* q : kv.second) {
        const cudaError_t e = cudaFree(q);
        if (first == cudaSuccess) first = e;
        stats_.bytes_reserved -= kv.first;
      }
    free_.clear();
    STRATA_CHECK(first == cudaSuccess) << "CUDA allocator: cudaFree of a cached block failed: "
                                       << cudaGetErrorString(first);
  }
  int index_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};
}  // namespace

Allocator* cuda_allocator(int index) {
  static std::mutex mu;
  static std::map<int, CudaCachingAllocator*>* all = new std::map<int, CudaCachingAllocator*>();
  std::lock_guard<std::mutex> lock(mu);
  int count = 0;
  STRATA_CUDA_CHECK(cudaGetDeviceCount(&count));
  STRATA_CHECK(index >= 0 && index < count) << "device cuda:" << index << " requested, but " << count
                                            << " CUDA devices are visible";
  auto it = all->find(index);
  if (it == all->end()) it = all->emplace(index, new CudaCachingAllocator(index)).first;
  return it->second;
}

}  // namespace strata
