#include "strata/core/allocator.h"
#include "test_util.h"

using namespace strata;

TEST_CASE("size classes round up with bounded slack", "[allocator]") {
  CHECK(allocator_size_class(1) == 64);
  CHECK(allocator_size_class(64) == 64);
  CHECK(allocator_size_class(65) == 128);
  CHECK(allocator_size_class(4096) == 4096);
  for (size_t n : {4097ul, 10000ul, 123457ul, 1ul << 20, (1ul << 20) + 1, 77777777ul}) {
    size_t c = allocator_size_class(n);
    CHECK(c >= n);
    CHECK(double(c - n) <= 0.25 * double(n));
  }
}

TEST_CASE("the CPU allocator returns 64-byte aligned blocks and reuses freed ones", "[allocator]") {
  CpuCachingAllocator a;
  void* p = a.allocate(1000);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  AllocatorStats s = a.stats();
  CHECK(s.bytes_in_use == allocator_size_class(1000));
  a.deallocate(p, 1000);
  CHECK(a.stats().bytes_in_use == 0);
  void* q = a.allocate(990);  // same size class: same block
  CHECK(q == p);
  CHECK(a.stats().num_cache_hits == 1);
  void* r = a.allocate(100000);
  CHECK(r != q);
  CHECK(a.stats().peak_bytes_in_use == allocator_size_class(990) + allocator_size_class(100000));
  a.deallocate(q, 990);
  a.deallocate(r, 100000);
  CHECK(a.stats().bytes_reserved == allocator_size_class(990) + allocator_size_class(100000));
  a.reset_peak();
  CHECK(a.stats().peak_bytes_in_use == 0);
  a.empty_cache();
  CHECK(a.stats().bytes_reserved == 0);
}

TEST_CASE("tensors return their memory to the process allocator", "[allocator]") {
  Allocator& a = allocator_for(Device::cpu());
  size_t before = a.stats().bytes_in_use;
  {
    Tensor t = Tensor::zeros({256, 256});
    Tensor v = t.transpose(0, 1);  // a view keeps the storage alive
    CHECK(a.stats().bytes_in_use >= before + 256 * 256 * 4);
  }
  CHECK(a.stats().bytes_in_use == before);
  uint64_t hits = a.stats().num_cache_hits;
  { Tensor t = Tensor::zeros({256, 256}); }
  CHECK(a.stats().num_cache_hits == hits + 1);
}
