// Tests of the tape itself, with ops defined here through autograd::record so
// they do not depend on the backend op set.
#include <map>
#include <set>
#include <string>

#include "strata/autograd/node.h"
#include "strata/autograd/ops_view.h"
#include "strata/core/dispatch.h"
#include "test_util.h"

using namespace strata;

namespace {
// y = c * x, element-wise (raw loop), recorded with its backward.
Tensor scale(const Tensor& x, double c) {
  Tensor y = x.detach().clone();
  dispatch_float(y.dtype(), "scale", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t i = 0; i < y.numel(); ++i) y.data<T>()[i] *= T(c);
  });
  return autograd::record("scale", y, {x}, [c](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = g.clone();
    dispatch_float(gx.dtype(), "scale", [&](auto tag) {
      using T = typename decltype(tag)::type;
      for (int64_t i = 0; i < gx.numel(); ++i) gx.data<T>()[i] *= T(c);
    });
    return {gx};
  });
}
// z = x * y element-wise (same shape).
Tensor mul(const Tensor& x, const Tensor& y) {
  Tensor xc = x.detach().contiguous(), yc = y.detach().contiguous();
  Tensor z = Tensor::empty(x.shape(), x.dtype());
  for (int64_t i = 0; i < z.numel(); ++i) z.data<double>()[i] = xc.data<double>()[i] * yc.data<double>()[i];
  return autograd::record("mul", z, {x, y}, [xc, yc](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor gx = Tensor::empty(xc.shape(), DType::F64), gy = Tensor::empty(xc.shape(), DType::F64);
    for (int64_t i = 0; i < gc.numel(); ++i) {
      gx.data<double>()[i] = gc.data<double>()[i] * yc.data<double>()[i];
      gy.data<double>()[i] = gc.data<double>()[i] * xc.data<double>()[i];
    }
    return {gx, gy};
  });
}
double sum_of(const Tensor& t) {
  double s = 0;
  for (double v : t.to_vector<double>()) s += v;
  return s;
}
}  // namespace

TEST_CASE("backward computes the gradient of a chain", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  Tensor y = scale(scale(x, 2), 5);
  y.backward(Tensor::ones({3}, DType::F64));
  test::require_close(x.grad(), {10, 10, 10});
}

TEST_CASE("gradients from several uses of a tensor add up", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, -2}, {2}).set_requires_grad();
  Tensor a = scale(x, 3);
  Tensor z = mul(a, a);  // 9 x^2 -> 18 x
  z.backward(Tensor::ones({2}, DType::F64));
  test::require_close(x.grad(), {18, -36});
  SECTION("and accumulate across backward calls until cleared") {
    Tensor z2 = scale(x, 1);
    z2.backward(Tensor::ones({2}, DType::F64));
    test::require_close(x.grad(), {19, -35});
    x.zero_grad();
    CHECK(!x.grad().defined());
  }
}

TEST_CASE("a diamond graph visits the shared node once with the summed gradient", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({2}, {1}).set_requires_grad();
  Tensor h = scale(x, 3);
  Tensor z = mul(scale(h, 2), scale(h, 5));  // 10 h^2 = 90 x^2 -> 180 x
  z.backward(Tensor::ones({1}, DType::F64));
  test::require_close(x.grad(), {360});
}

TEST_CASE("tensors without requires_grad get no gradient and record nothing", "[autograd]") {
  Tensor c = Tensor::from_vector<double>({1, 2}, {2});
  Tensor x = Tensor::from_vector<double>({3, 4}, {2}).set_requires_grad();
  Tensor k = scale(c, 2);
  CHECK(k.grad_fn() == nullptr);
  Tensor z = mul(k, x);
  CHECK(z.grad_fn() != nullptr);
  z.backward(Tensor::ones({2}, DType::F64));
  test::require_close(x.grad(), {2, 4});
  CHECK(!c.grad().defined());
}

TEST_CASE("NoGradGuard and detach stop recording", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1}, {1}).set_requires_grad();
  {
    NoGradGuard ng;
    CHECK(!GradMode::enabled());
    CHECK(scale(x, 2).grad_fn() == nullptr);
  }
  CHECK(GradMode::enabled());
  Tensor d = x.detach();
  CHECK(!d.requires_grad());
  CHECK(scale(d, 2).grad_fn() == nullptr);
  CHECK(d.impl().storage == x.impl().storage);
  REQUIRE_THROWS_WITH(d.backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("backward needs a seed for non-scalar outputs and refuses a second pass", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  Tensor y = scale(x, 2);
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("non-scalar"));
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones({3}, DType::F64)), Catch::Contains("does not match"));
  y.backward(Tensor::ones({2}, DType::F64));
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones({2}, DType::F64)), Catch::Contains("already used"));
}

TEST_CASE("a scalar output seeds backward with one", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({4}, {1}).set_requires_grad();
  Tensor y = reshape(scale(x, 3), {});
  y.backward();
  test::require_close(x.grad(), {3});
}

TEST_CASE("differentiable views route gradients back to the viewed elements", "[autograd]") {
  Tensor w = Tensor::from_vector<double>({0.5, -1.5, 2, 3, -4, 6}, {2, 3});
  auto weighted_sum = [&](const Tensor& v) { return mul(contiguous(v), w); };
  auto seed = GENERATE(1u, 2u);
  SECTION("transpose") {
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return weighted_sum(transpose(in[0], 0, 1)); },
                            {test::grad_input({3, 2}, seed)});
  }
  SECTION("permute") {
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return weighted_sum(reshape(permute(in[0], {2, 0, 1}), {2, 3})); },
        {test::grad_input({3, 1, 2}, seed)});
  }
  SECTION("reshape and view of a non-contiguous input") {
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return weighted_sum(reshape(in[0], {2, 3})); },
                            {test::grad_input({3, 2}, seed, true)});
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return weighted_sum(view(in[0], {2, 3})); },
                            {test::grad_input({6}, seed)});
  }
  SECTION("slice, narrow and select") {
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return weighted_sum(slice(in[0], 1, 0, 6, 2)); },
                            {test::grad_input({2, 6}, seed, true)});
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return weighted_sum(narrow(in[0], 0, 1, 2)); },
                            {test::grad_input({4, 3}, seed)});
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return weighted_sum(select(in[0], 1, 2)); },
        {test::grad_input({2, 4, 3}, seed)});
  }
  SECTION("unsqueeze, squeeze, contiguous and cast") {
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return weighted_sum(squeeze(unsqueeze(in[0], 1), 1)); },
        {test::grad_input({2, 3}, seed)});
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return weighted_sum(cast(cast(in[0], DType::F32), DType::F64)); },
        {test::grad_input({2, 3}, seed)}, {1e-3, 1e-4, 1e-3, 1234});
  }
}

TEST_CASE("the gradient of a slice is zero outside it", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4}, {4}).set_requires_grad();
  Tensor y = slice(x, 0, 1, 3);
  y.backward(Tensor::from_vector<double>({5, 7}, {2}));
  test::require_close(x.grad(), {0, 5, 7, 0});
  CHECK(sum_of(x.grad()) == 12);
}

TEST_CASE("gradcheck catches a wrong backward", "[autograd]") {
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor x = in[0];
    Tensor y = x.detach().clone();
    return autograd::record("wrong", y, {x}, [](const Tensor& g) -> std::vector<Tensor> {
      Tensor gx = g.clone();
      gx.data<double>()[0] += 1.0;  // deliberately off
      return {gx};
    });
  };
  autograd::GradcheckResult r = autograd::gradcheck(wrong, {test::grad_input({3}, 1)});
  CHECK(!r.ok);
  CHECK(r.report.find("input 0 element 0") != std::string::npos);
}

TEST_CASE("on_leaf_ready reports each leaf once, when its gradient is final", "[autograd]") {
  // w1 feeds the first op, w2 the last; x is used twice (by the first and the
  // last op); unused is never reached.
  Tensor w1 = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad();
  Tensor w2 = Tensor::from_vector<double>({3, -1}, {2}).set_requires_grad();
  Tensor x = Tensor::from_vector<double>({2, 5}, {2}).set_requires_grad();
  Tensor unused = Tensor::from_vector<double>({7}, {1}).set_requires_grad();
  Tensor h = mul(w1, x);        // first op
  Tensor y = mul(scale(h, 3), w2);
  Tensor z = mul(y, x);         // last op: 3 w1 w2 x^2
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> at_ready;
  auto name_of = [&](const Tensor& t) {
    if (t.same(w1)) return std::string("w1");
    if (t.same(w2)) return std::string("w2");
    if (t.same(x)) return std::string("x");
    return std::string("other");
  };
  autograd::run_backward(z, Tensor::ones({2}, DType::F64), [&](const Tensor& leaf) {
    order.push_back(name_of(leaf));
    at_ready[order.back()] = leaf.grad().to_vector<double>();
  });
  // w2 is done after the second op from the end; x and w1 only after the first op.
  REQUIRE(order.size() == 3);
  CHECK(order[0] == "w2");
  CHECK(std::set<std::string>(order.begin() + 1, order.end()) == std::set<std::string>{"w1", "x"});
  // the gradient seen at the report is the final one
  for (const auto& [name, t] : {std::pair<std::string, Tensor>{"w1", w1}, {"w2", w2}, {"x", x}})
    CHECK(at_ready[name] == t.grad().to_vector<double>());
  test::require_close(x.grad(), {2 * 3 * 1 * 3 * 2.0, 2 * 3 * 2 * -1 * 5.0});
  CHECK(!unused.grad().defined());
}

TEST_CASE("on_leaf_ready also reports leaves behind nodes that receive no gradient", "[autograd]") {
  // first_of(p, q) = p, with no gradient for q: q's node is reachable but
  // never runs, so b is reported with no gradient and a with its own.
  auto first_of = [](const Tensor& p, const Tensor& q) {
    return autograd::record("first_of", p.detach().clone(), {p, q},
                            [](const Tensor& g) -> std::vector<Tensor> { return {g.clone(), Tensor()}; });
  };
  Tensor a = Tensor::from_vector<double>({2}, {1}).set_requires_grad();
  Tensor b = Tensor::from_vector<double>({4}, {1}).set_requires_grad();
  Tensor unrelated = Tensor::from_vector<double>({1}, {1}).set_requires_grad();
  Tensor z = first_of(scale(a, 3), scale(b, 2));
  (void)scale(unrelated, 2);  // not reachable from z: never reported
  std::set<std::string> reported;
  autograd::run_backward(z, Tensor::ones({1}, DType::F64), [&](const Tensor& leaf) {
    CHECK(!leaf.same(unrelated));
    reported.insert(leaf.same(a) ? "a" : leaf.same(b) ? "b" : "?");
    if (leaf.same(b)) CHECK(!leaf.grad().defined());
  });
  CHECK(reported == std::set<std::string>{"a", "b"});
  test::require_close(a.grad(), {3});
}
