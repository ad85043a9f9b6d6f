// Tensor basics on the GPU against the same operations on the CPU: fill_ and
// the zeros/ones/full constructors, copy_ between every dtype pair on one GPU
// and across CPU <-> GPU (strided on either side, overlapping ranges),
// contiguous/clone/to(dtype)/to(Device) of views, item and to_vector. Casts
// must give the CPU's bits exactly, so every comparison here is exact.
#include <cmath>
#include <cstring>
#include <vector>

#include "cuda_test_util.h"

using namespace strata;
using strata::test::cpu;
using strata::test::gpu;

namespace {

const Device kGpu = Device::cuda(0);
const DType kAllTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64};

// Uniform values in [lo, hi) on the CPU in dtype dt.
Tensor rnd(const Shape& s, uint64_t seed, DType dt, double lo = -50, double hi = 50) {
  return Tensor::uniform(s, seed, 0, lo, hi, DType::F32).to(dt);
}

// The raw bytes of a tensor's view (copied to the host, contiguous).
std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = cpu(t).contiguous();
  std::vector<uint8_t> b(c.nbytes());
  if (!b.empty()) std::memcpy(b.data(), c.raw_data(), b.size());
  return b;
}

// Strided [7, 13] windows into larger buffers, the same on either device:
// src_window of a [14, 7] buffer is transposed and one row in (inner stride 7,
// offset 7); dst_window of a [7, 15] buffer skips a column on each side (row
// stride 15, offset 1).
Tensor src_window(const Tensor& b) { return b.narrow(0, 1, 13).transpose(0, 1); }
Tensor dst_window(const Tensor& b) { return b.narrow(1, 1, 13); }

}  // namespace

TEST_CASE("GPU tensor: full, zeros, ones and fill_ give the CPU's values", "[cuda][tensor]") {
  for (DType dt : kAllTypes) {
    INFO(dtype_name(dt));
    for (double v : {0.0, 1.0, -2.75, 1e5, -0.0}) {
      Tensor g = Tensor::full({7, 13}, v, dt, kGpu);
      REQUIRE(g.device() == kGpu);
      REQUIRE(bytes_of(g) == bytes_of(Tensor::full({7, 13}, v, dt)));
    }
    REQUIRE(bytes_of(Tensor::zeros({3, 1025}, dt, kGpu)) == bytes_of(Tensor::zeros({3, 1025}, dt)));
    REQUIRE(bytes_of(Tensor::ones({1, 1}, dt, kGpu)) == bytes_of(Tensor::ones({1, 1}, dt)));
    REQUIRE(Tensor::zeros({0, 4}, dt, kGpu).numel() == 0);
    // fill_ of a strided view leaves the rest of the buffer alone.
    Tensor gb = gpu(rnd({14, 7}, 1, dt)), cb = rnd({14, 7}, 1, dt);
    src_window(gb).fill_(3.5);
    src_window(cb).fill_(3.5);
    REQUIRE(bytes_of(gb) == bytes_of(cb));
    gb.select(1, 2).fill_(0.0);  // a strided zero fill (not a memset)
    cb.select(1, 2).fill_(0.0);
    REQUIRE(bytes_of(gb) == bytes_of(cb));
  }
  // -0.0 keeps its sign bit (it is not the all-zero pattern).
  REQUIRE(std::signbit(Tensor::full({1}, -0.0, DType::F32, kGpu).item()));
}

TEST_CASE("GPU tensor: copy_ casts between every dtype pair like the CPU", "[cuda][tensor]") {
  for (DType sd : kAllTypes) {
    for (DType dd : kAllTypes) {
      INFO(dtype_name(sd) << " -> " << dtype_name(dd));
      Tensor src = rnd({7, 13}, 2, sd);
      // contiguous -> contiguous
      Tensor g = Tensor::empty({7, 13}, dd, kGpu);
      g.copy_(gpu(src));
      Tensor c = Tensor::empty({7, 13}, dd);
      c.copy_(src);
      REQUIRE(bytes_of(g) == bytes_of(c));
      REQUIRE(bytes_of(gpu(src).to(dd)) == bytes_of(src.to(dd)));
      // strided source (GPU view) -> strided destination window in a larger buffer
      Tensor sbuf = rnd({14, 7}, 3, sd);
      Tensor gdst = gpu(rnd({7, 15}, 4, dd)), cdst = rnd({7, 15}, 4, dd);
      dst_window(gdst).copy_(src_window(gpu(sbuf)));
      dst_window(cdst).copy_(src_window(sbuf));
      REQUIRE(bytes_of(gdst) == bytes_of(cdst));
      // contiguous source -> strided destination, strided source -> contiguous destination
      dst_window(gdst).copy_(gpu(src));
      dst_window(cdst).copy_(src);
      REQUIRE(bytes_of(gdst) == bytes_of(cdst));
      REQUIRE(bytes_of(src_window(gpu(sbuf)).to(dd)) == bytes_of(src_window(sbuf).to(dd)));
      // round trip through the other dtype equals the CPU round trip
      REQUIRE(bytes_of(gpu(src).to(dd).to(sd)) == bytes_of(src.to(dd).to(sd)));
    }
  }
}

TEST_CASE("GPU tensor: copy_ across CPU and GPU with strides and casts", "[cuda][tensor]") {
  for (DType sd : kAllTypes) {
    for (DType dd : {DType::F32, DType::BF16, DType::I64, DType::F16}) {
      INFO(dtype_name(sd) << " -> " << dtype_name(dd));
      Tensor sbuf = rnd({14, 7}, 5, sd);
      Tensor expect_buf = rnd({7, 15}, 6, dd);
      dst_window(expect_buf).copy_(src_window(sbuf));  // the CPU-only result
      // CPU strided source -> GPU strided destination
      Tensor gdst = gpu(rnd({7, 15}, 6, dd));
      dst_window(gdst).copy_(src_window(sbuf));
      REQUIRE(bytes_of(gdst) == bytes_of(expect_buf));
      // GPU strided source -> CPU strided destination
      Tensor cdst = rnd({7, 15}, 6, dd);
      dst_window(cdst).copy_(src_window(gpu(sbuf)));
      REQUIRE(bytes_of(cdst) == bytes_of(expect_buf));
      // contiguous destinations of the source's dtype take the transfer directly
      Tensor direct = Tensor::empty({7, 13}, sd);
      direct.copy_(src_window(gpu(sbuf)));
      REQUIRE(bytes_of(direct) == bytes_of(src_window(sbuf)));
      Tensor gdirect = Tensor::empty({7, 13}, sd, kGpu);
      gdirect.copy_(src_window(sbuf));
      REQUIRE(bytes_of(gdirect) == bytes_of(src_window(sbuf)));
    }
  }
}

TEST_CASE("GPU tensor: large copies and fills cover every element", "[cuda][tensor]") {
  // More elements than the capped grid has threads: the grid-stride loops wrap.
  Tensor x = rnd({1100, 1031}, 7, DType::F32);
  Tensor g = gpu(x);
  REQUIRE(bytes_of(g.transpose(0, 1).contiguous()) == bytes_of(x.transpose(0, 1).contiguous()));
  REQUIRE(bytes_of(g.to(DType::BF16)) == bytes_of(x.to(DType::BF16)));
  Tensor f = Tensor::full({1100, 1031}, 0.25, DType::F16, kGpu);
  REQUIRE(bytes_of(f) == bytes_of(Tensor::full({1100, 1031}, 0.25, DType::F16)));
  Tensor t = gpu(x);
  t.transpose(0, 1).fill_(-1.5);
  REQUIRE(bytes_of(t) == bytes_of(Tensor::full({1100, 1031}, -1.5)));
}

TEST_CASE("GPU tensor: overlapping copies read the source first", "[cuda][tensor]") {
  for (DType dt : {DType::F32, DType::BF16, DType::I64}) {
    INFO(dtype_name(dt));
    Tensor c = rnd({100}, 8, dt), g = gpu(c);
    // contiguous and overlapping: the CPU uses memmove
    c.slice(0, 1, 100).copy_(c.slice(0, 0, 99));
    g.slice(0, 1, 100).copy_(g.slice(0, 0, 99));
    REQUIRE(bytes_of(g) == bytes_of(c));
    c.slice(0, 0, 90).copy_(c.slice(0, 10, 100));
    g.slice(0, 0, 90).copy_(g.slice(0, 10, 100));
    REQUIRE(bytes_of(g) == bytes_of(c));
    // a view copied onto itself is unchanged
    g.copy_(g);
    REQUIRE(bytes_of(g) == bytes_of(c));
  }
  // a strided copy onto an overlapping view (an in-place transpose) sees the
  // source as it was before the copy
  Tensor c = rnd({8, 8}, 9, DType::F32), g = gpu(c);
  g.copy_(g.transpose(0, 1));
  REQUIRE(bytes_of(g) == bytes_of(c.transpose(0, 1).contiguous()));
}

TEST_CASE("GPU tensor: contiguous, clone, reshape, to(dtype) and to(Device) of views", "[cuda][tensor]") {
  for (DType dt : kAllTypes) {
    INFO(dtype_name(dt));
    Tensor x = rnd({5, 7, 3}, 10, dt);
    Tensor g = gpu(x);
    Tensor gv = g.permute({2, 0, 1}).slice(2, 1, 7, 2), cv = x.permute({2, 0, 1}).slice(2, 1, 7, 2);
    REQUIRE_FALSE(gv.is_contiguous());
    Tensor gc = gv.contiguous();
    REQUIRE(gc.device() == kGpu);
    REQUIRE(gc.is_contiguous());
    REQUIRE(bytes_of(gc) == bytes_of(cv.contiguous()));
    REQUIRE(g.contiguous().same(g));  // already contiguous: itself
    Tensor cl = g.clone();
    REQUIRE(cl.impl().storage != g.impl().storage);
    REQUIRE(bytes_of(cl) == bytes_of(x));
    REQUIRE(g.to(dt).same(g));
    REQUIRE(bytes_of(gv.reshape({-1})) == bytes_of(cv.reshape({-1})));
    // to(Device) of a non-contiguous GPU view
    Tensor h = gv.to(Device::cpu());
    REQUIRE(h.device().is_cpu());
    REQUIRE(h.is_contiguous());
    REQUIRE(bytes_of(h) == bytes_of(cv));
    // 0-d and empty tensors
    REQUIRE(bytes_of(gpu(Tensor::scalar(3.0, DType::F32)).to(dt)) == bytes_of(Tensor::scalar(3.0).to(dt)));
    REQUIRE(gpu(Tensor::empty({0, 3}, dt)).to(Device::cpu()).numel() == 0);
    REQUIRE(gpu(Tensor::empty({0, 3}, dt)).transpose(0, 1).contiguous().numel() == 0);
  }
}

TEST_CASE("GPU tensor: item and to_vector copy to the host", "[cuda][tensor]") {
  for (DType dt : kAllTypes) {
    INFO(dtype_name(dt));
    Tensor x = rnd({4, 6}, 11, dt);
    Tensor g = gpu(x);
    REQUIRE(g.select(0, 2).select(0, 3).item() == x.select(0, 2).select(0, 3).item());
    REQUIRE(gpu(Tensor::scalar(-7.0)).to(dt).item() == -7.0);
    REQUIRE(g.to_vector<float>() == x.to_vector<float>());
    REQUIRE(g.to_vector<double>() == x.to_vector<double>());
    REQUIRE(g.to_vector<int32_t>() == x.to_vector<int32_t>());
    REQUIRE(g.to_vector<int64_t>() == x.to_vector<int64_t>());
    REQUIRE(g.transpose(0, 1).to_vector<double>() == x.transpose(0, 1).to_vector<double>());
  }
  REQUIRE_THROWS_WITH(gpu(Tensor::zeros({2})).item(), Catch::Contains("Tensor::item"));
}

TEST_CASE("GPU tensor: copy_ shape mismatch is an error", "[cuda][tensor]") {
  Tensor g = Tensor::zeros({3, 4}, DType::F32, kGpu);
  REQUIRE_THROWS_WITH(g.copy_(Tensor::zeros({4, 3})), Catch::Contains("copy_"));
  REQUIRE_THROWS_WITH(g.copy_(Tensor::zeros({4, 3}, DType::F32, kGpu)), Catch::Contains("copy_"));
}
