// Reductions, prefix sums and top-k: backend kernels against naive loops over
// every axis (negative too, keepdim both ways, non-contiguous inputs, sizes
// that take the threaded path), plus gradchecks of the differentiable wrappers.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "strata/autograd/ops_math.h"
#include "strata/backend/reduce.h"
#include "test_util.h"

using namespace strata;

namespace {

// Shapes with odd sizes, size-1 dims, and large ones whose reductions run
// threaded both along the last axis and along a middle axis.
const std::vector<Shape> kShapes = {{7}, {3, 4, 5}, {2, 1, 6, 3}, {5, 300}, {300, 5, 40}, {3, 700}};

// The values of x along `axis` for every output position (row-major over the
// other dims), read through plain index arithmetic on a row-major copy.
std::vector<std::vector<double>> fibers(const Tensor& x, int64_t axis) {
  const int64_t ax = axis < 0 ? axis + x.dim() : axis;
  std::vector<double> v = x.to_vector<double>();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < ax; ++d) outer *= x.shape()[size_t(d)];
  for (int64_t d = ax + 1; d < x.dim(); ++d) inner *= x.shape()[size_t(d)];
  const int64_t n = x.shape()[size_t(ax)];
  std::vector<std::vector<double>> out;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      std::vector<double> f;
      for (int64_t j = 0; j < n; ++j) f.push_back(v[size_t((o * n + j) * inner + i)]);
      out.push_back(f);
    }
  return out;
}

Shape reduced(const Shape& s, int64_t axis, bool keepdim) {
  const int64_t ax = axis < 0 ? axis + int64_t(s.size()) : axis;
  Shape r = s;
  if (keepdim) r[size_t(ax)] = 1;
  else r.erase(r.begin() + ax);
  return r;
}

// Checks op(x, axis, keepdim) against f applied to each fiber, for every axis
// (as given and as its negative alias), keepdim both ways.
void check_axis_reduction(const std::function<Tensor(const Tensor&, int64_t, bool)>& op,
                          const std::function<double(const std::vector<double>&)>& f, DType dt, bool noncontig,
                          double rtol) {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    Tensor x = test::rand(s, seed++, dt);
    if (noncontig) x = test::non_contiguous(x);
    for (int64_t axis = -x.dim(); axis < x.dim(); ++axis) {
      for (bool keepdim : {false, true}) {
        INFO("x " << x.str() << " axis " << axis << " keepdim " << keepdim);
        Tensor y = op(x, axis, keepdim);
        REQUIRE(y.shape() == reduced(s, axis, keepdim));
        REQUIRE(y.dtype() == dt);
        std::vector<double> expected;
        for (const auto& fb : fibers(x, axis)) expected.push_back(f(fb));
        test::require_close(y, expected, rtol, rtol);
      }
    }
  }
}

double naive_sum(const std::vector<double>& v) {
  long double s = 0;
  for (double e : v) s += e;
  return double(s);
}

// Integer-valued random data with many ties.
Tensor tied(const Shape& s, uint64_t seed, DType dt) {
  return test::rand(s, seed, DType::F64, 0, 4).to(DType::I64).to(dt);
}

// Stable descending order of a fiber: the expected top-k indices (NaN first).
std::vector<int64_t> stable_desc(const std::vector<double>& v) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    double va = v[size_t(a)], vb = v[size_t(b)];
    if (std::isnan(va) != std::isnan(vb)) return std::isnan(va);
    return va > vb;
  });
  return idx;
}

}  // namespace

// ---------------------------------------------------------------- sum / mean

TEST_CASE("sum reduces every axis with keepdim both ways", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool nc = GENERATE(false, true);
  check_axis_reduction([](const Tensor& x, int64_t a, bool k) { return backend::sum(x, a, k); }, naive_sum, dt, nc,
                       dt == DType::F32 ? 1e-5 : 1e-12);
}

TEST_CASE("mean reduces every axis with keepdim both ways", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool nc = GENERATE(false, true);
  check_axis_reduction([](const Tensor& x, int64_t a, bool k) { return backend::mean(x, a, k); },
                       [](const std::vector<double>& v) { return naive_sum(v) / double(v.size()); }, dt, nc,
                       dt == DType::F32 ? 1e-5 : 1e-12);
}

TEST_CASE("sum over integer tensors is exact", "[reduce]") {
  const DType dt = GENERATE(DType::I32, DType::I64);
  Tensor x = test::non_contiguous(tied({6, 9}, 3, dt));
  for (int64_t axis : {0, 1, -1}) {
    std::vector<double> expected;
    for (const auto& fb : fibers(x, axis)) expected.push_back(naive_sum(fb));
    Tensor y = backend::sum(x, axis);
    REQUIRE(y.dtype() == dt);
    test::require_close(y, expected, 0, 0);
  }
  test::require_close(backend::sum_all(x), {naive_sum(x.to_vector<double>())}, 0, 0);
}

TEST_CASE("sum of float rows accumulates in double", "[reduce]") {
  // 3e6 copies of 0.1f: a float accumulator drifts by ~1e-3 relative, double stays exact to f32 rounding
  const int64_t n = 3000000;
  Tensor x = Tensor::full({2, n}, 0.1, DType::F32);
  const double exact = double(0.1f) * double(n);
  test::require_close(backend::sum(x, 1), {exact, exact}, 1e-7, 0);
  test::require_close(backend::sum_all(x), {2 * exact}, 1e-7, 0);
  test::require_close(backend::mean(x, -1), {double(0.1f), double(0.1f)}, 1e-7, 0);
  SECTION("also along a leading axis") {
    Tensor t = Tensor::full({n / 100, 100}, 0.1, DType::F32);
    Tensor s = backend::sum(t, 0);
    std::vector<double> e(100, double(0.1f) * double(n / 100));
    test::require_close(s, e, 1e-7, 0);
  }
}

TEST_CASE("sum_all adds every element of any layout into a 0-d tensor", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  for (const Shape& s : {Shape{}, Shape{1}, Shape{7, 13}, Shape{3, 1, 5}, Shape{301, 257}}) {
    Tensor x = test::non_contiguous(test::rand(s, 5, dt));
    Tensor y = backend::sum_all(x);
    REQUIRE(y.dim() == 0);
    REQUIRE(y.dtype() == dt);
    test::require_close(y, {naive_sum(x.to_vector<double>())}, dt == DType::F32 ? 1e-6 : 1e-12, 1e-6);
  }
}

TEST_CASE("reductions over an empty axis give zeros for sum and NaN for mean", "[reduce]") {
  Tensor x = Tensor::empty({3, 0});
  test::require_close(backend::sum(x, 1), {0, 0, 0});
  for (double v : backend::mean(x, 1).to_vector<double>()) CHECK(std::isnan(v));
  CHECK(backend::sum(x, 0).shape() == Shape{0});
  test::require_close(backend::sum_all(x), {0.0});
}

TEST_CASE("reductions name the op when the axis is out of range", "[reduce]") {
  Tensor x = Tensor::ones({2, 3});
  REQUIRE_THROWS_WITH(backend::sum(x, 2), Catch::Contains("sum") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::mean(x, -3), Catch::Contains("mean") && Catch::Contains("axis -3"));
  REQUIRE_THROWS_WITH(backend::max(x, 5), Catch::Contains("max"));
  REQUIRE_THROWS_WITH(backend::argmax(x, 2), Catch::Contains("max"));
  REQUIRE_THROWS_WITH(backend::cumsum(x, 2), Catch::Contains("cumsum"));
  REQUIRE_THROWS_WITH(backend::topk(x, 1, 2), Catch::Contains("topk"));
  REQUIRE_THROWS_WITH(backend::sum(Tensor::scalar(1.0), 0), Catch::Contains("sum") && Catch::Contains("rank 0"));
}

TEST_CASE("mean rejects integer tensors", "[reduce]") {
  REQUIRE_THROWS_WITH(backend::mean(Tensor::arange(4), 0), Catch::Contains("mean") && Catch::Contains("i64"));
}

// ---------------------------------------------------------------- max / argmax

TEST_CASE("max returns the values and the index of the first maximum", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I32, DType::I64);
  const bool nc = GENERATE(false, true);
  uint64_t seed = 40;
  for (const Shape& s : kShapes) {
    Tensor x = tied(s, seed++, dt);  // values 0..3: ties everywhere
    if (nc) x = test::non_contiguous(x);
    for (int64_t axis = -x.dim(); axis < x.dim(); ++axis) {
      for (bool keepdim : {false, true}) {
        INFO("x " << x.str() << " axis " << axis << " keepdim " << keepdim);
        auto [values, indices] = backend::max(x, axis, keepdim);
        REQUIRE(values.shape() == reduced(s, axis, keepdim));
        REQUIRE(indices.shape() == values.shape());
        REQUIRE(indices.dtype() == DType::I64);
        REQUIRE(values.dtype() == dt);
        std::vector<double> ev, ei;
        for (const auto& fb : fibers(x, axis)) {
          auto it = std::max_element(fb.begin(), fb.end());  // first of equal maxima
          ev.push_back(*it);
          ei.push_back(double(it - fb.begin()));
        }
        test::require_close(values, ev, 0, 0);
        test::require_close(indices, ei, 0, 0);
        test::require_close(backend::argmax(x, axis, keepdim), ei, 0, 0);
      }
    }
  }
}

TEST_CASE("max treats NaN as the maximum", "[reduce]") {
  Tensor x = Tensor::from_vector<float>({1.f, std::nanf(""), 5.f, std::nanf("")}, {1, 4});
  auto [v, i] = backend::max(x, 1);
  CHECK(std::isnan(v.item()));
  CHECK(i.item() == 1);
}

TEST_CASE("max refuses to reduce an empty axis", "[reduce]") {
  REQUIRE_THROWS_WITH(backend::max(Tensor::empty({2, 0}), 1), Catch::Contains("max") && Catch::Contains("size 0"));
}

// ---------------------------------------------------------------- cumsum

TEST_CASE("cumsum is the inclusive prefix sum along any axis", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool nc = GENERATE(false, true);
  uint64_t seed = 60;
  for (const Shape& s : kShapes) {
    Tensor x = test::rand(s, seed++, dt);
    if (nc) x = test::non_contiguous(x);
    for (int64_t axis = -x.dim(); axis < x.dim(); ++axis) {
      INFO("x " << x.str() << " axis " << axis);
      Tensor y = backend::cumsum(x, axis);
      REQUIRE(y.shape() == s);
      // expected, laid out like x: scatter each fiber's prefix sums back
      const int64_t ax = axis < 0 ? axis + x.dim() : axis;
      int64_t inner = 1;
      for (int64_t d = ax + 1; d < x.dim(); ++d) inner *= s[size_t(d)];
      const int64_t n = s[size_t(ax)];
      std::vector<double> expected(size_t(x.numel()));
      std::vector<std::vector<double>> fb = fibers(x, axis);
      for (size_t r = 0; r < fb.size(); ++r) {
        const int64_t o = int64_t(r) / inner, i = int64_t(r) % inner;
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) {
          acc += fb[r][size_t(j)];
          expected[size_t((o * n + j) * inner + i)] = acc;
        }
      }
      test::require_close(y, expected, dt == DType::F32 ? 1e-5 : 1e-12, dt == DType::F32 ? 1e-5 : 1e-12);
    }
  }
}

TEST_CASE("cumsum on integer tensors stays exact and keeps the dtype", "[reduce]") {
  const DType dt = GENERATE(DType::I32, DType::I64);
  Tensor x = Tensor::from_vector<int64_t>({1, 0, 1, 1, 0, 2, 3, 0, 1, 1, 1, 0}, {3, 4}).to(dt);
  Tensor y = backend::cumsum(x, 1);
  REQUIRE(y.dtype() == dt);
  test::require_close(y, {1, 1, 2, 3, 0, 2, 5, 5, 1, 2, 3, 3}, 0, 0);
  test::require_close(backend::cumsum(x, 0), {1, 0, 1, 1, 1, 2, 4, 1, 2, 3, 5, 1}, 0, 0);
  SECTION("on a non-contiguous view") {
    test::require_close(backend::cumsum(x.transpose(0, 1), -1), {1, 1, 2, 0, 2, 3, 1, 4, 5, 1, 1, 1}, 0, 0);
  }
}

// ---------------------------------------------------------------- topk

TEST_CASE("topk returns the k largest sorted descending with ties by lower index", "[reduce]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I64);
  const bool nc = GENERATE(false, true);
  uint64_t seed = 80;
  for (const Shape& s : {Shape{7}, Shape{3, 4, 5}, Shape{2, 1, 6, 3}, Shape{5, 300}, Shape{200, 9, 20}}) {
    Tensor x = (seed % 2) ? tied(s, seed, dt) : test::rand(s, seed, DType::F64, -1, 1).to(dt);
    ++seed;
    if (nc) x = test::non_contiguous(x);
    for (int64_t axis = -x.dim(); axis < x.dim(); ++axis) {
      const int64_t n = x.size(axis);
      for (int64_t k : {int64_t(0), int64_t(1), std::min<int64_t>(3, n), n}) {
        INFO("x " << x.str() << " axis " << axis << " k " << k);
        auto [values, indices] = backend::topk(x, k, axis);
        Shape os = s;
        os[size_t(axis < 0 ? axis + x.dim() : axis)] = k;
        REQUIRE(values.shape() == os);
        REQUIRE(indices.shape() == os);
        REQUIRE(indices.dtype() == DType::I64);
        // expected fibers, laid out like the result
        const int64_t ax = axis < 0 ? axis + x.dim() : axis;
        int64_t inner = 1;
        for (int64_t d = ax + 1; d < x.dim(); ++d) inner *= s[size_t(d)];
        std::vector<double> ev(size_t(shape_numel(os))), ei(ev.size());
        std::vector<std::vector<double>> fb = fibers(x, axis);
        for (size_t r = 0; r < fb.size(); ++r) {
          const int64_t o = int64_t(r) / inner, i = int64_t(r) % inner;
          std::vector<int64_t> order = stable_desc(fb[r]);
          for (int64_t j = 0; j < k; ++j) {
            ev[size_t((o * k + j) * inner + i)] = fb[r][size_t(order[size_t(j)])];
            ei[size_t((o * k + j) * inner + i)] = double(order[size_t(j)]);
          }
        }
        test::require_close(values, ev, 0, 0);
        test::require_close(indices, ei, 0, 0);
      }
    }
  }
}

TEST_CASE("topk ranks NaN above every number", "[reduce]") {
  Tensor x = Tensor::from_vector<double>({3, std::nan(""), 7, 1}, {4});
  auto [v, i] = backend::topk(x, 2);
  test::require_close(i, {1, 2}, 0, 0);
  CHECK(std::isnan(v.to_vector<double>()[0]));
}

TEST_CASE("topk rejects k outside [0, n]", "[reduce]") {
  Tensor x = Tensor::ones({2, 3});
  REQUIRE_THROWS_WITH(backend::topk(x, 4), Catch::Contains("topk") && Catch::Contains("k=4"));
  REQUIRE_THROWS_WITH(backend::topk(x, -1, 0), Catch::Contains("topk") && Catch::Contains("k=-1"));
}

// ---------------------------------------------------------------- differentiable wrappers

TEST_CASE("gradcheck: sum over an axis", "[reduce]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({3, 4, 5}, 101, nc);
  for (int64_t axis : {0, 1, 2, -1})
    for (bool keepdim : {false, true}) {
      INFO("axis " << axis << " keepdim " << keepdim);
      test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::sum(in[0], axis, keepdim); }, {x});
    }
}

TEST_CASE("gradcheck: sum and mean of all elements", "[reduce]") {
  const bool nc = GENERATE(false, true);
  for (const Shape& s : {Shape{}, Shape{6}, Shape{3, 4}, Shape{2, 3, 4}}) {
    Tensor x = test::grad_input(s, 102, nc);
    INFO("x " << x.str());
    test::require_gradcheck([](const std::vector<Tensor>& in) { return strata::sum(in[0]); }, {x});
    test::require_gradcheck([](const std::vector<Tensor>& in) { return strata::mean(in[0]); }, {x});
  }
}

TEST_CASE("gradcheck: mean over an axis", "[reduce]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({3, 4, 5}, 103, nc);
  for (int64_t axis : {0, 1, -1})
    for (bool keepdim : {false, true}) {
      INFO("axis " << axis << " keepdim " << keepdim);
      test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::mean(in[0], axis, keepdim); }, {x});
    }
}

TEST_CASE("gradcheck: max over an axis with distinct values", "[reduce]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({4, 5, 3}, 104, nc);
  for (int64_t axis : {0, 1, -1})
    for (bool keepdim : {false, true}) {
      INFO("axis " << axis << " keepdim " << keepdim);
      test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::max(in[0], axis, keepdim); }, {x});
    }
}

TEST_CASE("max sends the whole gradient to the first of tied maxima", "[reduce]") {
  Tensor x = Tensor::from_vector<double>({2, 5, 5, 1, 3, 3}, {2, 3}).set_requires_grad();
  strata::sum(strata::max(x, 1)).backward();
  test::require_close(x.grad(), {0, 1, 0, 0, 1, 0});
  CHECK(strata::argmax(x, 1).grad_fn() == nullptr);
  test::require_close(strata::argmax(x, 1), {1, 1}, 0, 0);
}

TEST_CASE("gradcheck: cumsum along every axis", "[reduce]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({3, 4, 5}, 105, nc);
  for (int64_t axis : {0, 1, 2, -2}) {
    INFO("axis " << axis);
    test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::cumsum(in[0], axis); }, {x});
  }
}

TEST_CASE("cumsum of integers through the differentiable API records nothing", "[reduce]") {
  Tensor x = Tensor::from_vector<int32_t>({1, 2, 3}, {3});
  Tensor y = strata::cumsum(x, 0);
  CHECK(y.grad_fn() == nullptr);
  test::require_close(y, {1, 3, 6}, 0, 0);
}

TEST_CASE("gradcheck: topk values along any axis", "[reduce]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({4, 6, 3}, 106, nc);
  for (int64_t axis : {0, 1, -1})
    for (int64_t k : {1, 2, 3}) {
      INFO("axis " << axis << " k " << k);
      test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::topk(in[0], k, axis).first; }, {x});
    }
}

TEST_CASE("topk through the differentiable API returns indices without gradient", "[reduce]") {
  Tensor x = test::grad_input({2, 5}, 107);
  auto [v, i] = strata::topk(x, 2);
  CHECK(v.grad_fn() != nullptr);
  CHECK(i.grad_fn() == nullptr);
  CHECK(i.dtype() == DType::I64);
  auto [bv, bi] = backend::topk(x.detach(), 2);
  test::require_close(v, bv, 0, 0);
  test::require_close(i, bi, 0, 0);
}

TEST_CASE("gradcheck: a softmax-like chain of reductions and element-wise ops", "[reduce]") {
  Tensor x = test::grad_input({3, 5}, 108, true);
  test::require_gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor m = strata::max(in[0], -1, true);
        Tensor e = strata::exp(in[0] - m);
        return e / strata::sum(e, -1, true) + strata::mean(in[0], 0);
      },
      {x});
}
