// Caching allocators. Training allocates the same sizes every step; keeping
// freed blocks in per-size-class free lists makes those allocations O(1) and
// keeps malloc/free (and, on GPU, cudaMalloc/cudaFree) out of the step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "strata/core/device.h"

namespace strata {

struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out to live storages (size-class rounded)
  size_t peak_bytes_in_use = 0;
  size_t bytes_reserved = 0;   // in use + cached in free lists
  uint64_t num_allocs = 0;     // allocate() calls
  uint64_t num_cache_hits = 0; // served from a free list
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached blocks to the system.
  virtual void empty_cache() = 0;
  virtual Device device() const = 0;
};

// Rounds a request to its size class: multiples of 64 bytes up to 4 KiB, then
// four classes per power of two (so at most 25% of a block is slack).
size_t allocator_size_class(size_t nbytes);

// 64-byte aligned host memory with reuse by size class. Thread-safe.
class CpuCachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;
  Device device() const override { return Device::cpu(); }
  ~CpuCachingAllocator() override;

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

// The process-wide allocator for a device (never destroyed, so storages freed
// during static destruction stay valid).
Allocator& allocator_for(Device d);

}  // namespace strata
