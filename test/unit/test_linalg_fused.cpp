// linear_relu (the fused linear + ReLU autograd op) on the CPU: values equal
// relu(linear()), gradients by gradcheck and against the unfused graph, the
// kink (relu'(0) = 0) and the error messages.
#include "strata/autograd/ops_linalg.h"
#include "strata/autograd/ops_math.h"
#include "test_util.h"

using namespace strata;

TEST_CASE("linear_relu equals relu(linear()) exactly", "[gemm][linear_relu]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool with_bias = GENERATE(false, true);
  Tensor x = test::rand({3, 7, 13}, 1, dt), w = test::rand({9, 13}, 2, dt);
  Tensor b = with_bias ? test::rand({9}, 3, dt) : Tensor();
  Tensor y = linear_relu(x, w, b);
  REQUIRE(y.shape() == Shape{3, 7, 9});
  // Same GEMM, then the same relu: bit-identical.
  test::require_close(y, relu(linear(x, w, b)), 0, 0);
  bool some_zero = false, some_positive = false;
  for (double v : y.to_vector<double>()) {
    REQUIRE(v >= 0);
    some_zero = some_zero || v == 0;
    some_positive = some_positive || v > 0;
  }
  REQUIRE(some_zero);
  REQUIRE(some_positive);
}

TEST_CASE("linear_relu gradients pass gradcheck", "[gemm][linear_relu]") {
  const bool with_bias = GENERATE(false, true);
  const bool noncontig = GENERATE(false, true);
  const uint64_t seed = GENERATE(1, 2);
  SECTION("2-D input") {
    Tensor x = test::grad_input({5, 4}, seed, noncontig), w = test::grad_input({6, 4}, seed + 10, noncontig);
    Tensor b = with_bias ? test::grad_input({6}, seed + 20, noncontig) : Tensor();
    std::vector<Tensor> in{x, w};
    if (with_bias) in.push_back(b);
    test::require_gradcheck(
        [&](const std::vector<Tensor>& t) { return linear_relu(t[0], t[1], with_bias ? t[2] : Tensor()); }, in);
  }
  SECTION("3-D input") {
    Tensor x = test::grad_input({2, 3, 4}, seed + 30, noncontig), w = test::grad_input({5, 4}, seed + 40, noncontig);
    Tensor b = with_bias ? test::grad_input({5}, seed + 50, noncontig) : Tensor();
    std::vector<Tensor> in{x, w};
    if (with_bias) in.push_back(b);
    test::require_gradcheck(
        [&](const std::vector<Tensor>& t) { return linear_relu(t[0], t[1], with_bias ? t[2] : Tensor()); }, in);
  }
}

TEST_CASE("linear_relu gradients equal those of relu(linear())", "[gemm][linear_relu]") {
  Tensor x0 = test::rand({4, 6, 8}, 61, DType::F64), w0 = test::rand({10, 8}, 62, DType::F64);
  Tensor b0 = test::rand({10}, 63, DType::F64), gy = test::rand({4, 6, 10}, 64, DType::F64);
  auto grads = [&](bool fused) {
    Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
    Tensor b = b0.clone().set_requires_grad(true);
    Tensor y = fused ? linear_relu(x, w, b) : relu(linear(x, w, b));
    y.backward(gy);
    return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
  };
  std::vector<Tensor> fused = grads(true), unfused = grads(false);
  for (size_t i = 0; i < 3; ++i) test::require_close(fused[i], unfused[i], 1e-12, 1e-12);
}

TEST_CASE("linear_relu passes no gradient through outputs at exactly zero", "[gemm][linear_relu]") {
  // Zero input and bias: every pre-activation is exactly 0, where relu'(0) = 0
  // (PyTorch's convention, and relu()'s), so every gradient is zero.
  Tensor x = Tensor::zeros({3, 4}, DType::F64).set_requires_grad(true);
  Tensor w = test::rand({5, 4}, 71, DType::F64).set_requires_grad(true);
  Tensor b = Tensor::zeros({5}, DType::F64).set_requires_grad(true);
  Tensor y = linear_relu(x, w, b);
  y.backward(Tensor::ones({3, 5}, DType::F64));
  test::require_close(x.grad(), std::vector<double>(12, 0.0));
  test::require_close(w.grad(), std::vector<double>(20, 0.0));
  test::require_close(b.grad(), std::vector<double>(5, 0.0));
}

TEST_CASE("linear_relu records nothing when no input needs grad", "[gemm][linear_relu]") {
  Tensor y = linear_relu(test::rand({2, 3}, 1), test::rand({4, 3}, 2), test::rand({4}, 3));
  REQUIRE(y.grad_fn() == nullptr);
  Tensor w = test::grad_input({4, 3}, 4);
  REQUIRE(linear_relu(test::rand({2, 3}, 5, DType::F64), w).grad_fn() != nullptr);
}

TEST_CASE("linear_relu rejects inconsistent input, weight and bias naming itself", "[gemm][linear_relu]") {
  Tensor w = Tensor::zeros({6, 4});
  REQUIRE_THROWS_WITH(linear_relu(Tensor::zeros({2, 5}), w),
                      "linear_relu: x [2, 5] has 5 features, weight [6, 4] expects 4");
  REQUIRE_THROWS_WITH(linear_relu(Tensor::zeros({2, 4}), w, Tensor::zeros({4})),
                      "linear_relu: bias [4] does not match weight [6, 4] (expected [6])");
  REQUIRE_THROWS_WITH(linear_relu(Tensor::zeros({2, 4}), Tensor::zeros({6, 4}, DType::F64)),
                      Catch::Contains("linear_relu: dtypes differ"));
}
