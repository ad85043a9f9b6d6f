// concat and split: values against naive index arithmetic along every axis,
// views and round trips, error messages, and gradients of the differentiable
// versions (each split piece on its own).
#include <vector>

#include "strata/autograd/ops_math.h"
#include "strata/backend/index.h"
#include "test_util.h"

using namespace strata;

namespace {

// Naive concat: for each output element find the input it comes from.
std::vector<double> naive_concat(const std::vector<Tensor>& xs, int64_t axis) {
  const Tensor& x0 = xs[0];
  const int64_t ax = axis < 0 ? axis + x0.dim() : axis;
  int64_t outer = 1, inner = 1, total = 0;
  for (int64_t d = 0; d < ax; ++d) outer *= x0.shape()[size_t(d)];
  for (int64_t d = ax + 1; d < x0.dim(); ++d) inner *= x0.shape()[size_t(d)];
  std::vector<std::vector<double>> vals;
  for (const Tensor& x : xs) {
    vals.push_back(x.to_vector<double>());
    total += x.shape()[size_t(ax)];
  }
  std::vector<double> out;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < total; ++j) {
      int64_t k = 0, jj = j;
      while (jj >= xs[size_t(k)].shape()[size_t(ax)]) jj -= xs[size_t(k++)].shape()[size_t(ax)];
      const int64_t n = xs[size_t(k)].shape()[size_t(ax)];
      for (int64_t i = 0; i < inner; ++i) out.push_back(vals[size_t(k)][size_t((o * n + jj) * inner + i)]);
    }
  return out;
}

// Three tensors of `base` shape with sizes 2, 1 and 3 along `axis`.
std::vector<Tensor> pieces_along(const Shape& base, int64_t axis, DType dt, bool nc, uint64_t seed) {
  std::vector<Tensor> xs;
  for (int64_t n : {2, 1, 3}) {
    Shape s = base;
    s[size_t(axis < 0 ? axis + int64_t(base.size()) : axis)] = n;
    Tensor x = test::rand(s, seed++, DType::F64, -5, 5).to(dt);
    xs.push_back(nc ? test::non_contiguous(x) : x);
  }
  return xs;
}

}  // namespace

TEST_CASE("concat joins tensors along every axis", "[concat]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I64);
  const bool nc = GENERATE(false, true);
  for (const Shape& base : {Shape{5}, Shape{3, 4}, Shape{2, 3, 5}, Shape{2, 1, 3, 2}}) {
    for (int64_t axis = -int64_t(base.size()); axis < int64_t(base.size()); ++axis) {
      std::vector<Tensor> xs = pieces_along(base, axis, dt, nc, 7);
      INFO("base " << shape_str(base) << " axis " << axis);
      Tensor y = backend::concat(xs, axis);
      Shape expected_shape = base;
      expected_shape[size_t(axis < 0 ? axis + int64_t(base.size()) : axis)] = 6;
      REQUIRE(y.shape() == expected_shape);
      REQUIRE(y.dtype() == dt);
      REQUIRE(y.is_contiguous());
      test::require_close(y, naive_concat(xs, axis), 0, 0);
    }
  }
}

TEST_CASE("concat of large pieces matches the naive result", "[concat]") {
  std::vector<Tensor> xs = {test::rand({300, 70}, 1), test::non_contiguous(test::rand({300, 129}, 2)),
                            test::rand({300, 1}, 3)};
  test::require_close(backend::concat(xs, 1), naive_concat(xs, 1), 0, 0);
  std::vector<Tensor> rows = {test::rand({170, 64}, 4), test::rand({1, 64}, 5), test::rand({333, 64}, 6)};
  test::require_close(backend::concat(rows, 0), naive_concat(rows, 0), 0, 0);
}

TEST_CASE("concat copies: the result does not alias its inputs", "[concat]") {
  Tensor a = Tensor::ones({2, 2});
  Tensor y = backend::concat({a}, 0);
  REQUIRE(y.impl().storage != a.impl().storage);
  a.fill_(5);
  test::require_close(y, {1, 1, 1, 1}, 0, 0);
}

TEST_CASE("concat accepts pieces of size zero along the axis", "[concat]") {
  Tensor a = test::rand({2, 3}, 1), e = Tensor::empty({2, 0}), b = test::rand({2, 1}, 2);
  Tensor y = backend::concat({e, a, e, b}, 1);
  REQUIRE(y.shape() == Shape{2, 4});
  test::require_close(y, naive_concat({a, b}, 1), 0, 0);
}

TEST_CASE("concat rejects mismatched inputs with a message naming the problem", "[concat]") {
  Tensor a = Tensor::ones({2, 3});
  REQUIRE_THROWS_WITH(backend::concat({}, 0), Catch::Contains("concat") && Catch::Contains("no tensors"));
  REQUIRE_THROWS_WITH(backend::concat({a, Tensor::ones({2, 3}, DType::F64)}, 0),
                      Catch::Contains("concat") && Catch::Contains("f64"));
  REQUIRE_THROWS_WITH(backend::concat({a, Tensor::ones({3, 3})}, 1),
                      Catch::Contains("concat") && Catch::Contains("[3, 3]") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(backend::concat({a, Tensor::ones({2, 3, 1})}, 0), Catch::Contains("concat"));
  REQUIRE_THROWS_WITH(backend::concat({a, a}, 2), Catch::Contains("concat") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::concat({Tensor::scalar(1), Tensor::scalar(2)}, 0), Catch::Contains("concat"));
}

TEST_CASE("split returns views of the input along the axis", "[concat]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::rand({4, 6, 5}, 9, DType::F64);
  if (nc) x = test::non_contiguous(x);
  for (int64_t axis : {0, 1, 2, -1}) {
    const int64_t n = x.size(axis);
    std::vector<int64_t> sizes = {1, n - 3, 0, 2};
    std::vector<Tensor> parts = backend::split(x, sizes, axis);
    REQUIRE(parts.size() == 4);
    int64_t start = 0;
    for (size_t k = 0; k < parts.size(); ++k) {
      INFO("axis " << axis << " piece " << k);
      CHECK(parts[k].impl().storage == x.impl().storage);  // a view, not a copy
      test::require_close(parts[k], x.narrow(axis, start, sizes[k]).contiguous(), 0, 0);
      start += sizes[k];
    }
    test::require_close(backend::concat(parts, axis), x, 0, 0);  // the round trip
  }
}

TEST_CASE("split rejects sizes that do not add up to the axis", "[concat]") {
  Tensor x = Tensor::ones({3, 4});
  REQUIRE_THROWS_WITH(backend::split(x, {1, 2}, 1),
                      Catch::Contains("split") && Catch::Contains("sum to 3") && Catch::Contains("size 4"));
  REQUIRE_THROWS_WITH(backend::split(x, {5, -1}, 1), Catch::Contains("split") && Catch::Contains("negative"));
  REQUIRE_THROWS_WITH(backend::split(x, {3}, 2), Catch::Contains("split") && Catch::Contains("axis 2"));
}

TEST_CASE("gradcheck: concat sends each slab of the gradient to its input", "[concat]") {
  const bool nc = GENERATE(false, true);
  for (int64_t axis : {0, 1, -1}) {
    std::vector<Tensor> xs;
    uint64_t seed = 20;
    for (int64_t n : {2, 1, 3}) {
      Shape s = {3, 4, 2};
      s[size_t(axis < 0 ? axis + 3 : axis)] = n;
      xs.push_back(test::grad_input(s, seed++, nc));
    }
    INFO("axis " << axis);
    test::require_gradcheck([=](const std::vector<Tensor>& in) { return strata::concat(in, axis); }, xs);
  }
}

TEST_CASE("gradcheck: concat with an input that needs no gradient", "[concat]") {
  Tensor a = test::grad_input({2, 3}, 30), c = test::rand({2, 2}, 31, DType::F64);
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return strata::concat({c, in[0], c}, 1); }, {a});
}

TEST_CASE("gradcheck: split pieces are each differentiable", "[concat]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({4, 7}, 40, nc);
  for (int64_t axis : {0, 1}) {
    INFO("axis " << axis);
    std::vector<int64_t> sizes = axis == 0 ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{2, 0, 4, 1};
    // recombine the pieces in another order with different weights so every
    // piece's gradient path is exercised
    test::require_gradcheck(
        [=](const std::vector<Tensor>& in) {
          std::vector<Tensor> p = strata::split(in[0], sizes, axis);
          std::vector<Tensor> q;
          for (size_t k = 0; k < p.size(); ++k) q.push_back(p[p.size() - 1 - k] * double(k + 1));
          return strata::concat(q, axis);
        },
        {x});
  }
}

TEST_CASE("using one split piece gives zero gradient to the rest", "[concat]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5}, {5}).set_requires_grad();
  std::vector<Tensor> p = strata::split(x, {2, 3}, 0);
  strata::sum(p[1] * 2.0).backward();
  test::require_close(x.grad(), {0, 0, 2, 2, 2});
}

TEST_CASE("chunk splits into equal differentiable pieces", "[concat]") {
  Tensor x = test::grad_input({2, 6}, 50, true);
  std::vector<Tensor> c = strata::chunk(x, 3, 1);
  REQUIRE(c.size() == 3);
  for (const Tensor& t : c) CHECK(t.shape() == Shape{2, 2});
  test::require_close(c[2], x.detach().narrow(1, 4, 2).contiguous(), 0, 0);
  test::require_gradcheck(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> q = strata::chunk(in[0], 2, 1);
        return q[0] * q[1];
      },
      {x});
  REQUIRE_THROWS_WITH(strata::chunk(x, 4, 1), Catch::Contains("chunk") && Catch::Contains("4 equal pieces"));
}
