#include "strata/core/allocator.h"

#include <cstdlib>
#include <new>

#include "strata/core/error.h"

namespace strata {

size_t allocator_size_class(size_t n) {
  if (n == 0) n = 1;
  if (n <= 4096) return (n + 63) & ~size_t(63);
  // four classes per power of two: p, 1.25p, 1.5p, 1.75p
  size_t p = 4096;
  while (p * 2 <= n) p *= 2;
  size_t q = p / 4;
  return (n + q - 1) / q * q;
}

void* CpuCachingAllocator::allocate(size_t nbytes) {
  size_t cls = allocator_size_class(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.num_allocs;
  void* p = nullptr;
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++stats_.num_cache_hits;
  } else {
    p = std::aligned_alloc(64, cls);
    if (!p) {
      // give cached blocks back and retry once before reporting
      for (auto& kv : free_)
        for (void* q : kv.second) std::free(q), stats_.bytes_reserved -= kv.first;
      free_.clear();
      p = std::aligned_alloc(64, cls);
      STRATA_CHECK(p != nullptr) << "out of host memory: could not allocate " << cls << " bytes ("
                                 << stats_.bytes_in_use << " bytes in use)";
    }
    stats_.bytes_reserved += cls;
  }
  stats_.bytes_in_use += cls;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return p;
}

void CpuCachingAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  size_t cls = allocator_size_class(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_[cls].push_back(p);
  stats_.bytes_in_use -= cls;
}

AllocatorStats CpuCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CpuCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

void CpuCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& kv : free_)
    for (void* q : kv.second) {
      std::free(q);
      stats_.bytes_reserved -= kv.first;
    }
  free_.clear();
}

CpuCachingAllocator::~CpuCachingAllocator() { empty_cache(); }

Allocator* cuda_allocator(int index);  // defined by the CUDA backend when built with CUDA=1

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) {
    static CpuCachingAllocator* cpu = new CpuCachingAllocator();  // intentionally never destroyed
    return *cpu;
  }
#ifdef STRATA_WITH_CUDA
  return *cuda_allocator(d.index);
#else
  STRATA_FAIL() << "device " << d.str() << " requested, but this build has no CUDA backend (build with CUDA=1)";
  return allocator_for(Device::cpu());
#endif
}

}  // namespace strata
