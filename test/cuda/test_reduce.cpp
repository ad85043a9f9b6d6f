// GPU reductions (sum, mean, sum_all, max/argmax, cumsum, topk) against their CPU twins.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/backend/reduce.h"

using namespace strata;
using test::cpu;
using test::gpu;
using test::require_close;

namespace {

Tensor rand_t(const Shape& s, uint64_t seed, double lo = -3, double hi = 3, DType dt = DType::F32) {
  return Tensor::uniform(s, seed, 0, lo, hi, dt);
}

// Whole numbers in [0, levels): many ties.
Tensor ties(const Shape& s, uint64_t seed, int levels, DType dt = DType::F32) {
  std::vector<float> v = Tensor::uniform(s, seed, 0, 0, levels, DType::F32).to_vector<float>();
  for (float& e : v) e = std::floor(e);
  return Tensor::from_vector(v, s).to(dt);
}

Tensor rounded(const Tensor& x, DType dt) { return x.to(dt).to(DType::F32); }

// Exact equality of a GPU result with its CPU twin (NaN equals NaN).
void require_same(const Tensor& c, const Tensor& g, const std::string& what) {
  REQUIRE(g.device().is_cuda());
  REQUIRE(g.dtype() == c.dtype());
  REQUIRE(g.shape() == c.shape());
  const std::vector<double> cv = c.to_vector<double>(), gv = cpu(g).to_vector<double>();
  size_t bad = 0, first = cv.size();
  for (size_t i = 0; i < cv.size(); ++i)
    if (!(cv[i] == gv[i] || (std::isnan(cv[i]) && std::isnan(gv[i])))) {
      ++bad;
      if (first == cv.size()) first = i;
    }
  INFO(what << ": " << bad << " of " << cv.size() << " differ; first at " << first);
  REQUIRE(bad == 0);
}

bool same_bits(const Tensor& a, const Tensor& b_gpu) {
  const Tensor b = cpu(b_gpu);
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

std::string tag(const std::string& what, const Shape& s, int64_t axis) {
  return what + " " + shape_str(s) + " axis " + std::to_string(axis);
}

const std::vector<Shape> kShapes = {{1, 1}, {7, 13}, {3, 1025}, {2, 3, 5}, {13, 1}, {1, 7}};

}  // namespace

// ---------------------------------------------------------------- sum / mean

TEST_CASE("cuda sum and mean match the CPU along every axis with keepdim both ways", "[cuda][reduce]") {
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 1;
    for (const Shape& s : kShapes) {
      const Tensor x = rand_t(s, seed++, -3, 3, dt), xg = gpu(x);
      for (int64_t a = 0; a < int64_t(s.size()); ++a)
        for (bool keep : {false, true}) {
          require_close(backend::sum(x, a, keep), backend::sum(xg, a, keep), -1, tag("sum", s, a));
          require_close(backend::mean(x, a, keep), backend::mean(xg, a, keep), -1, tag("mean", s, a));
        }
    }
  }
}

TEST_CASE("cuda sum over integer tensors is exact", "[cuda][reduce]") {
  for (DType dt : {DType::I32, DType::I64}) {
    for (const Shape& s : kShapes) {
      const Tensor x = rand_t(s, 10, -1000, 1000).to(dt);
      for (int64_t a = 0; a < int64_t(s.size()); ++a)
        require_same(backend::sum(x, a, false), backend::sum(gpu(x), a, false), tag("int sum", s, a));
    }
  }
}

TEST_CASE("cuda sum takes strided views and many strided lanes", "[cuda][reduce]") {
  const Tensor x = rand_t({13, 33}, 20), xg = gpu(x);
  for (int64_t a = 0; a < 2; ++a) {
    require_close(backend::sum(x.transpose(0, 1), a), backend::sum(xg.transpose(0, 1), a), -1, tag("sum^T", {33, 13}, a));
    require_close(backend::mean(x.slice(1, 2, 33, 4), a), backend::mean(xg.slice(1, 2, 33, 4), a), -1,
                  tag("mean slice", {13, 8}, a));
  }
  const Tensor w = rand_t({33, 2048}, 21), wg = gpu(w);  // one thread per lane
  require_close(backend::sum(w, 0), backend::sum(wg, 0), -1, "sum [33, 2048] axis 0");
  require_close(backend::mean(w, 0, true), backend::mean(wg, 0, true), -1, "mean [33, 2048] axis 0");
  const Tensor b = rand_t({5, 1}, 22);
  require_close(backend::sum(b.expand({5, 40}), 1), backend::sum(gpu(b).expand({5, 40}), 1), -1, "sum expand");
}

TEST_CASE("cuda sum and mean in bf16/f16 match the CPU in f32 on rounded inputs", "[cuda][reduce]") {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const Shape& s : std::vector<Shape>{{7, 13}, {3, 1025}, {33, 2048}}) {
      const Tensor x = rand_t(s, 30, -3, 3);
      const Tensor x16 = gpu(x.to(dt)), xr = rounded(x, dt);
      for (int64_t a = 0; a < 2; ++a) {
        const Tensor sg = backend::sum(x16, a);
        REQUIRE(sg.dtype() == dt);
        require_close(backend::sum(xr, a), sg, -1, tag("sum 16-bit", s, a));
        require_close(backend::mean(xr, a), backend::mean(x16, a), -1, tag("mean 16-bit", s, a));
      }
    }
  }
}

TEST_CASE("cuda reductions over an empty axis give zeros for sum and NaN for mean", "[cuda][reduce]") {
  const Tensor x = gpu(Tensor::zeros({3, 0}));
  CHECK(cpu(backend::sum(x, 1)).to_vector<float>() == std::vector<float>(3, 0.f));
  for (float v : cpu(backend::mean(x, 1)).to_vector<float>()) CHECK(std::isnan(v));
  CHECK(backend::sum(x, 0).shape() == Shape{0});
}

// ---------------------------------------------------------------- sum_all

TEST_CASE("cuda sum_all adds every element of any layout into a 0-d tensor", "[cuda][reduce]") {
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor x = rand_t({13, 33}, 40, -3, 3, dt), xg = gpu(x);
    const Tensor s = backend::sum_all(xg);
    CHECK(s.dim() == 0);
    CHECK(s.device().is_cuda());
    require_close(backend::sum_all(x), s, -1, "sum_all");
    require_close(backend::sum_all(x.transpose(0, 1)), backend::sum_all(xg.transpose(0, 1)), -1, "sum_all^T");
    require_close(backend::sum_all(x.slice(0, 1, 13, 3)), backend::sum_all(xg.slice(0, 1, 13, 3)), -1,
                  "sum_all slice");
    require_close(backend::sum_all(x.select(0, 4).select(0, 7)), backend::sum_all(xg.select(0, 4).select(0, 7)), -1,
                  "sum_all of a 0-d view");
  }
  const Tensor big = rand_t({1000003}, 41, -1, 2);  // many partial blocks; accumulates in double
  require_close(backend::sum_all(big), backend::sum_all(gpu(big)), -1, "sum_all 1e6");
  const Tensor ints = rand_t({7, 1025}, 42, -1e6, 1e6).to(DType::I64);
  require_same(backend::sum_all(ints), backend::sum_all(gpu(ints)), "sum_all i64");
  const Tensor i32 = rand_t({7, 13}, 43, -1e3, 1e3).to(DType::I32);
  require_same(backend::sum_all(i32), backend::sum_all(gpu(i32)), "sum_all i32");
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor x = rand_t({3, 1025}, 44);
    require_close(backend::sum_all(rounded(x, dt)), backend::sum_all(gpu(x.to(dt))), -1, "sum_all 16-bit");
  }
  const Tensor empty = backend::sum_all(gpu(Tensor::zeros({0, 4})));
  CHECK(cpu(empty).item() == 0.0);
}

TEST_CASE("cuda sum_all and axis sums are bit-identical across repeated runs", "[cuda][reduce]") {
  const Tensor x = gpu(rand_t({1000, 1000}, 50));
  CHECK(same_bits(cpu(backend::sum_all(x)), backend::sum_all(x)));
  CHECK(same_bits(cpu(backend::sum(x, 0)), backend::sum(x, 0)));
  CHECK(same_bits(cpu(backend::sum(x, 1)), backend::sum(x, 1)));
}

// ---------------------------------------------------------------- max / argmax

TEST_CASE("cuda max and argmax match the CPU values and first-maximum indices", "[cuda][reduce]") {
  for (DType dt : {DType::F32, DType::F64, DType::I32, DType::I64, DType::BF16, DType::F16}) {
    uint64_t seed = 60;
    for (const Shape& s : std::vector<Shape>{{1, 1}, {7, 13}, {3, 1025}, {2, 3, 5}, {33, 2048}, {1025, 3}}) {
      // few levels: many tied maxima, so the index rule is exercised
      for (int levels : {3, 1000}) {
        const Tensor x = ties(s, seed++, levels, dt), xg = gpu(x);
        for (int64_t a = 0; a < int64_t(s.size()); ++a)
          for (bool keep : {false, true}) {
            auto [cv, ci] = backend::max(x, a, keep);
            auto [gv, gi] = backend::max(xg, a, keep);
            const std::string w = tag(std::string("max ") + dtype_name(dt) + " levels " + std::to_string(levels), s, a);
            require_same(cv, gv, w + " values");
            require_same(ci, gi, w + " indices");
            require_same(backend::argmax(x, a, keep), backend::argmax(xg, a, keep), w + " argmax");
          }
      }
    }
  }
}

TEST_CASE("cuda max ranks NaN above every number and takes strided views", "[cuda][reduce]") {
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector<float>({1, nan, 5, nan, 2, 7, 7, 0, -1, -0.f, 0, -1}, {3, 4});
  for (int64_t a = 0; a < 2; ++a) {
    auto [cv, ci] = backend::max(x, a);
    auto [gv, gi] = backend::max(gpu(x), a);
    require_same(cv, gv, tag("max NaN values", {3, 4}, a));
    require_same(ci, gi, tag("max NaN indices", {3, 4}, a));
  }
  const Tensor y = ties({13, 33}, 70, 4), yg = gpu(y);
  for (int64_t a = 0; a < 2; ++a) {
    auto [cv, ci] = backend::max(y.transpose(0, 1), a);
    auto [gv, gi] = backend::max(yg.transpose(0, 1), a);
    require_same(cv, gv, tag("max^T values", {33, 13}, a));
    require_same(ci, gi, tag("max^T indices", {33, 13}, a));
  }
}

// ---------------------------------------------------------------- cumsum

TEST_CASE("cuda cumsum matches the CPU along every axis", "[cuda][reduce]") {
  for (DType dt : {DType::F32, DType::F64}) {
    uint64_t seed = 80;
    for (const Shape& s : std::vector<Shape>{{1, 1}, {7, 13}, {3, 1025}, {2, 3, 5}, {2, 5000}, {33, 2048}}) {
      const Tensor x = rand_t(s, seed++, -1, 2, dt), xg = gpu(x);
      for (int64_t a = 0; a < int64_t(s.size()); ++a)
        require_close(backend::cumsum(x, a), backend::cumsum(xg, a), -1, tag("cumsum", s, a));
    }
  }
  for (DType dt : {DType::I32, DType::I64}) {
    for (const Shape& s : std::vector<Shape>{{7, 13}, {2, 5000}, {33, 2048}}) {
      const Tensor x = rand_t(s, 90, -100, 100).to(dt);
      for (int64_t a = 0; a < 2; ++a)
        require_same(backend::cumsum(x, a), backend::cumsum(gpu(x), a), tag("int cumsum", s, a));
    }
  }
  const Tensor x = rand_t({13, 33}, 91), xg = gpu(x);
  for (int64_t a = 0; a < 2; ++a)
    require_close(backend::cumsum(x.transpose(0, 1), a), backend::cumsum(xg.transpose(0, 1), a), -1,
                  tag("cumsum^T", {33, 13}, a));
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor y = rand_t({3, 1025}, 92, -1, 2);
    for (int64_t a = 0; a < 2; ++a)
      require_close(backend::cumsum(rounded(y, dt), a), backend::cumsum(gpu(y.to(dt)), a), -1,
                    tag("cumsum 16-bit", {3, 1025}, a));
  }
}

// ---------------------------------------------------------------- topk

TEST_CASE("cuda topk matches the CPU with ties broken by the lower index", "[cuda][reduce]") {
  for (DType dt : {DType::F32, DType::F64, DType::I64, DType::BF16}) {
    uint64_t seed = 100;
    for (const Shape& s : std::vector<Shape>{{1, 1}, {7, 13}, {3, 1025}, {2, 3, 50}, {100, 5}, {33, 2048}}) {
      for (int levels : {3, 100000}) {
        const Tensor x = ties(s, seed++, levels, dt), xg = gpu(x);
        for (int64_t a = 0; a < int64_t(s.size()); ++a) {
          const int64_t n = s[size_t(a)];
          // 1..16 keep a sorted list per thread; 17 and 40 rank every element
          for (int64_t k : {int64_t(1), int64_t(3), int64_t(8), int64_t(16), int64_t(17), int64_t(40), n}) {
            if (k > n) continue;
            if (k > 16 && n > 1100) continue;  // the ranking fallback is O(n^2) per lane
            auto [cv, ci] = backend::topk(x, k, a);
            auto [gv, gi] = backend::topk(xg, k, a);
            const std::string w = tag(std::string("topk ") + dtype_name(dt) + " k " + std::to_string(k) +
                                          " levels " + std::to_string(levels),
                                      s, a);
            require_same(cv, gv, w + " values");
            require_same(ci, gi, w + " indices");
          }
        }
      }
    }
  }
}

TEST_CASE("cuda topk ranks NaN first and takes strided views", "[cuda][reduce]") {
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector<float>({1, nan, 5, nan, 2, 7, 7, 0, -1, 3, 3, 3}, {3, 4});
  for (int64_t k : {1, 2, 3, 4}) {
    auto [cv, ci] = backend::topk(x, k, 1);
    auto [gv, gi] = backend::topk(gpu(x), k, 1);
    require_same(cv, gv, "topk NaN values k " + std::to_string(k));
    require_same(ci, gi, "topk NaN indices k " + std::to_string(k));
  }
  const Tensor y = ties({13, 40}, 110, 5), yg = gpu(y);
  for (int64_t k : {2, 13, 20}) {
    auto [cv, ci] = backend::topk(y.transpose(0, 1), k, 1);
    auto [gv, gi] = backend::topk(yg.transpose(0, 1), k, 1);
    require_same(cv, gv, "topk^T values k " + std::to_string(k));
    require_same(ci, gi, "topk^T indices k " + std::to_string(k));
  }
  auto [v0, i0] = backend::topk(gpu(y), 0, 1);
  CHECK(v0.shape() == Shape{13, 0});
  CHECK(i0.dtype() == DType::I64);
}

// ---------------------------------------------------------------- errors

TEST_CASE("cuda reductions name the op on bad arguments", "[cuda][reduce]") {
  const Tensor x = gpu(rand_t({3, 4}, 120));
  REQUIRE_THROWS_WITH(backend::sum(x, 2), Catch::Contains("sum"));
  REQUIRE_THROWS_WITH(backend::mean(gpu(Tensor::zeros({3}, DType::I32)), 0), Catch::Contains("mean"));
  REQUIRE_THROWS_WITH(backend::max(gpu(Tensor::zeros({3, 0})), 1), Catch::Contains("max"));
  REQUIRE_THROWS_WITH(backend::topk(x, 5, 1), Catch::Contains("topk"));
  REQUIRE_THROWS_WITH(backend::topk(x, -1, 1), Catch::Contains("topk"));
  REQUIRE_THROWS_WITH(backend::cumsum(x, -3), Catch::Contains("cumsum"));
}
