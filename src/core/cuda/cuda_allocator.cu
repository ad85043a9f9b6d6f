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
      STRATA_CUDA_CHECK(cudaSetDevice(index_));
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
    release_locked();
  }
  Device device() const override { return Device::cuda(index_); }

 private:
  void release_locked() {
    for (auto& kv : free_)
      for (void* q : kv.second) {
        cudaFree(q);
        stats_.bytes_reserved -= kv.first;
      }
    free_.clear();
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
