// Element-wise ops: backend kernels against naive loops written here (every
// unary and binary op, broadcasting both ways, 0-d operands, non-contiguous
// views, the parallel path), and gradchecks of the differentiable wrappers.
#include <cmath>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "strata/autograd/ops_math.h"
#include "strata/backend/elementwise.h"
#include "strata/core/grad_mode.h"
#include "test_util.h"

using namespace strata;
using backend::BinaryOp;
using backend::CompareOp;
using backend::UnaryOp;

namespace {

// Shapes for the kernels: 0-d, odd sizes, size-1 dims, and one large enough
// (77357 elements) to take the multi-threaded path.
const std::vector<Shape> kShapes = {{}, {1}, {7}, {7, 13}, {3, 4, 5}, {2, 3, 1, 5}, {301, 257}};

// Pairs of operand shapes that broadcast (in both directions, with 0-d and rank differences).
const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{7, 13}, {7, 13}},     {{3, 1, 5}, {4, 5}}, {{4, 5}, {3, 1, 5}},     {{7, 1}, {1, 13}},
    {{}, {3, 4}},           {{3, 4}, {}},        {{1}, {6}},              {{2, 3, 4}, {4}},
    {{2, 1, 4}, {2, 3, 1}}, {{}, {}},            {{301, 257}, {257}},     {{301, 1}, {301, 257}},
    {{301, 257}, {301, 257}}, {{2, 1, 3, 1}, {5, 1, 4}}};

// Multi-index of row-major position i in shape s.
std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
    idx[size_t(d)] = i % s[size_t(d)];
    i /= s[size_t(d)];
  }
  return idx;
}

// Row-major position in s of the element a broadcast read at output index idx sees.
int64_t broadcast_source(const std::vector<int64_t>& idx, const Shape& s) {
  const size_t lead = idx.size() - s.size();
  int64_t f = 0;
  for (size_t d = 0; d < s.size(); ++d) f = f * s[d] + (s[d] == 1 ? 0 : idx[lead + d]);
  return f;
}

// Broadcast shape computed independently of the library.
Shape naive_broadcast(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i + a.size() < n ? 1 : a[i + a.size() - n];
    int64_t db = i + b.size() < n ? 1 : b[i + b.size() - n];
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor ref_unary(const Tensor& x, const std::function<double(double)>& f) {
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e = f(e);
  return Tensor::from_vector(v, x.shape());
}

Tensor ref_binary(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  Shape s = naive_broadcast(a.shape(), b.shape());
  std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>(), out(size_t(shape_numel(s)));
  for (int64_t i = 0; i < int64_t(out.size()); ++i) {
    std::vector<int64_t> idx = unravel(i, s);
    out[size_t(i)] = f(av[size_t(broadcast_source(idx, a.shape()))], bv[size_t(broadcast_source(idx, b.shape()))]);
  }
  return Tensor::from_vector(out, s);
}

double ref_gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double ref_gelu_grad(double x) {
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

// Runs op on random inputs in [lo, hi) of every test shape, contiguous and
// not, f32 and f64, against the naive reference.
void check_unary(UnaryOp op, const std::function<double(double)>& ref, double lo, double hi) {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool noncontig = GENERATE(false, true);
  uint64_t seed = 11;
  for (const Shape& s : kShapes) {
    Tensor x = test::rand(s, seed++, dt, lo, hi);
    if (noncontig) x = test::non_contiguous(x);
    INFO(backend::unary_name(op) << " on " << x.str() << (noncontig ? " (non-contiguous)" : ""));
    Tensor y = backend::unary(op, x);
    REQUIRE(y.dtype() == dt);
    REQUIRE(y.is_contiguous());
    test::require_close(y, ref_unary(x, ref));
  }
}

// Checks unary_backward against g * f'(x) from a naive derivative.
void check_unary_backward(UnaryOp op, const std::function<double(double)>& dref, double lo, double hi) {
  const DType dt = GENERATE(DType::F32, DType::F64);
  for (const Shape& s : {Shape{7, 13}, Shape{3, 1, 5}, Shape{301, 257}}) {
    Tensor x = test::non_contiguous(test::rand(s, 3, dt, lo, hi));
    Tensor g = test::rand(s, 4, dt);
    Tensor y = backend::unary(op, x);
    Tensor dx = backend::unary_backward(op, g, x, y);
    Tensor expected = ref_binary(g, x, [&](double gv, double xv) { return gv * dref(xv); });
    INFO(backend::unary_name(op) << "_backward on " << x.str());
    test::require_close(dx, expected, dt == DType::F32 ? 1e-4 : 1e-10);
  }
}

// Values in +-[lo, 1): away from the kinks of relu/abs and the pole of 1/x.
Tensor away_from_zero(const Shape& s, uint64_t seed, bool noncontig, double lo = 0.1) {
  std::vector<double> v = test::rand(s, seed, DType::F64, lo, 1).to_vector<double>();
  std::vector<double> sign = test::rand(s, seed + 1000, DType::F64).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i)
    if (sign[i] < 0) v[i] = -v[i];
  Tensor t = Tensor::from_vector(v, s);
  if (noncontig) t = test::non_contiguous(t);
  t.set_requires_grad(true);
  return t;
}

using UnaryFn = Tensor (*)(const Tensor&);

// Gradchecks a differentiable unary op on contiguous and non-contiguous inputs.
void gradcheck_unary(UnaryFn f, double lo, double hi, bool avoid_zero = false) {
  for (const Shape& s : {Shape{}, Shape{5}, Shape{3, 4}, Shape{2, 3, 4}}) {
    for (bool nc : {false, true}) {
      Tensor x = avoid_zero ? away_from_zero(s, 21, nc, lo) : test::grad_input(s, 21, nc, lo, hi);
      INFO("input " << x.str() << (nc ? " non-contiguous" : ""));
      test::require_gradcheck([f](const std::vector<Tensor>& in) { return f(in[0]); }, {x});
    }
  }
}

void check_binary(BinaryOp op, const std::function<double(double, double)>& ref, double lo_a, double hi_a,
                  double lo_b, double hi_b) {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const int layout = GENERATE(0, 1, 2);  // 0: contiguous, 1: a non-contiguous, 2: both
  uint64_t seed = 100;
  for (const auto& [sa, sb] : kBroadcastPairs) {
    Tensor a = test::rand(sa, seed++, dt, lo_a, hi_a);
    Tensor b = test::rand(sb, seed++, dt, lo_b, hi_b);
    if (layout >= 1) a = test::non_contiguous(a);
    if (layout == 2) b = test::non_contiguous(b);
    INFO(backend::binary_name(op) << " of " << a.str() << " and " << b.str() << " layout " << layout);
    Tensor y = backend::binary(op, a, b);
    REQUIRE(y.is_contiguous());
    REQUIRE(y.dtype() == dt);
    test::require_close(y, ref_binary(a, b, ref));
  }
}

using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);

// Gradchecks a binary op with equal shapes, broadcasting both ways, a 0-d
// operand and non-contiguous operands.
void gradcheck_binary(BinaryFn f, double lo_a, double hi_a, double lo_b, double hi_b) {
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{3, 4}, {3, 4}}, {{3, 1, 5}, {4, 5}}, {{4, 5}, {3, 1, 5}}, {{}, {2, 3}}, {{2, 3}, {}}, {{2, 1}, {1, 3}}};
  for (const auto& [sa, sb] : pairs) {
    for (bool nc : {false, true}) {
      Tensor a = test::grad_input(sa, 31, nc, lo_a, hi_a);
      Tensor b = test::grad_input(sb, 32, nc, lo_b, hi_b);
      INFO("a " << a.str() << " b " << b.str() << (nc ? " non-contiguous" : ""));
      test::require_gradcheck([f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {a, b});
    }
  }
  SECTION("with only one operand requiring grad") {
    Tensor a = test::grad_input({3, 4}, 33, false, lo_a, hi_a);
    Tensor b = test::rand({4}, 34, DType::F64, lo_b, hi_b);
    test::require_gradcheck([f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, {a, b});
    test::require_gradcheck([f](const std::vector<Tensor>& in) { return f(in[1], in[0]); }, {a, b});
  }
}

}  // namespace

// ---------------------------------------------------------------- unary forward

TEST_CASE("neg negates every element", "[elementwise]") {
  check_unary(UnaryOp::Neg, [](double x) { return -x; }, -2, 2);
}
TEST_CASE("exp matches std::exp", "[elementwise]") {
  check_unary(UnaryOp::Exp, [](double x) { return std::exp(x); }, -5, 5);
}
TEST_CASE("log matches std::log on positive inputs", "[elementwise]") {
  check_unary(UnaryOp::Log, [](double x) { return std::log(x); }, 0.01, 10);
}
TEST_CASE("tanh matches std::tanh", "[elementwise]") {
  check_unary(UnaryOp::Tanh, [](double x) { return std::tanh(x); }, -4, 4);
}
TEST_CASE("sigmoid matches 1/(1+e^-x)", "[elementwise]") {
  check_unary(UnaryOp::Sigmoid, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, -8, 8);
}
TEST_CASE("relu zeroes negative elements", "[elementwise]") {
  check_unary(UnaryOp::Relu, [](double x) { return x > 0 ? x : 0.0; }, -1, 1);
}
TEST_CASE("gelu is the exact erf form", "[elementwise]") { check_unary(UnaryOp::Gelu, ref_gelu, -4, 4); }
TEST_CASE("sqrt matches std::sqrt", "[elementwise]") {
  check_unary(UnaryOp::Sqrt, [](double x) { return std::sqrt(x); }, 0, 9);
}
TEST_CASE("rsqrt is one over the square root", "[elementwise]") {
  check_unary(UnaryOp::Rsqrt, [](double x) { return 1.0 / std::sqrt(x); }, 0.01, 9);
}
TEST_CASE("abs drops the sign", "[elementwise]") {
  check_unary(UnaryOp::Abs, [](double x) { return std::fabs(x); }, -3, 3);
}
TEST_CASE("square multiplies each element by itself", "[elementwise]") {
  check_unary(UnaryOp::Square, [](double x) { return x * x; }, -3, 3);
}
TEST_CASE("reciprocal is one over x", "[elementwise]") {
  check_unary(UnaryOp::Reciprocal, [](double x) { return 1.0 / x; }, 0.05, 4);
}

TEST_CASE("gelu gives the erf values, not the tanh approximation", "[elementwise]") {
  Tensor x = Tensor::from_vector<double>({-3, -1, 0, 0.5, 1, 2}, {6});
  // 0.5 x (1 + erf(x / sqrt 2)) from a table; the tanh form gives 0.841192 at 1
  test::require_close(backend::unary(UnaryOp::Gelu, x),
                      {-0.00404969409489031, -0.15865525393145707, 0.0, 0.34573123063700656, 0.8413447460685429,
                       1.9544997361036416},
                      1e-12, 1e-15);
}

TEST_CASE("unary ops handle extreme inputs without NaN", "[elementwise]") {
  Tensor x = Tensor::from_vector<float>({-1000.f, -100.f, 0.f, 100.f, 1000.f}, {5});
  test::require_close(backend::unary(UnaryOp::Sigmoid, x), {0, 0, 0.5, 1, 1});
  test::require_close(backend::unary(UnaryOp::Tanh, x), {-1, -1, 0, 1, 1});
  test::require_close(backend::unary(UnaryOp::Gelu, x), {0, 0, 0, 100, 1000});
  SECTION("and propagate NaN through relu") {
    Tensor n = Tensor::from_vector<float>({std::nanf(""), -1.f}, {2});
    std::vector<float> r = backend::unary(UnaryOp::Relu, n).to_vector<float>();
    CHECK(std::isnan(r[0]));
    CHECK(r[1] == 0.f);
  }
}

TEST_CASE("f32 exp keeps infinities, NaN, overflow and subnormal results", "[elementwise]") {
  const float inf = std::numeric_limits<float>::infinity();
  Tensor x = Tensor::from_vector<float>({-inf, inf, std::nanf(""), -100.f, 88.7f, 89.f, 0.f, -87.f}, {8});
  std::vector<float> y = backend::unary(UnaryOp::Exp, x).to_vector<float>();
  CHECK(y[0] == 0.f);
  CHECK(std::isinf(y[1]));
  CHECK(std::isnan(y[2]));
  CHECK(std::fabs(double(y[3]) - std::exp(-100.0)) <= 1.5e-45);  // a subnormal, to half its spacing
  CHECK(double(y[4]) == Approx(std::exp(double(88.7f))).epsilon(3e-7));
  CHECK(std::isinf(y[5]));  // e^89 overflows f32
  CHECK(y[6] == 1.f);
  CHECK(double(y[7]) == Approx(std::exp(-87.0)).epsilon(3e-7));
}

TEST_CASE("f32 tanh and erf-based gelu are exact near zero and saturate far out", "[elementwise]") {
  Tensor x = Tensor::from_vector<float>({1e-5f, -3e-4f, 20.f, -20.f}, {4});
  std::vector<float> t = backend::unary(UnaryOp::Tanh, x).to_vector<float>();
  CHECK(t[0] == 1e-5f);
  CHECK(t[1] == -3e-4f);
  CHECK(t[2] == 1.f);
  CHECK(t[3] == -1.f);
  std::vector<float> g = backend::unary(UnaryOp::Gelu, x).to_vector<float>();
  CHECK(double(g[0]) == Approx(ref_gelu(double(1e-5f))).epsilon(1e-6));
  CHECK(g[2] == 20.f);
  CHECK(g[3] == 0.f);
}

TEST_CASE("unary ops reject integer tensors and name the op", "[elementwise]") {
  Tensor i = Tensor::arange(4, DType::I64);
  REQUIRE_THROWS_WITH(backend::unary(UnaryOp::Exp, i), Catch::Contains("exp") && Catch::Contains("i64"));
  REQUIRE_THROWS_WITH(backend::unary(UnaryOp::Relu, i.to(DType::I32)), Catch::Contains("relu"));
}

TEST_CASE("unary results of an empty tensor are empty", "[elementwise]") {
  Tensor x = Tensor::empty({3, 0, 2});
  Tensor y = backend::unary(UnaryOp::Exp, x);
  CHECK(y.shape() == Shape{3, 0, 2});
}

// ---------------------------------------------------------------- unary backward

TEST_CASE("unary_backward matches the analytic derivatives", "[elementwise]") {
  SECTION("exp") { check_unary_backward(UnaryOp::Exp, [](double x) { return std::exp(x); }, -2, 2); }
  SECTION("log") { check_unary_backward(UnaryOp::Log, [](double x) { return 1 / x; }, 0.1, 3); }
  SECTION("tanh") {
    check_unary_backward(UnaryOp::Tanh, [](double x) { return 1 - std::tanh(x) * std::tanh(x); }, -2, 2);
  }
  SECTION("sigmoid") {
    check_unary_backward(UnaryOp::Sigmoid, [](double x) {
      double s = 1 / (1 + std::exp(-x));
      return s * (1 - s);
    }, -4, 4);
  }
  SECTION("relu") { check_unary_backward(UnaryOp::Relu, [](double x) { return x > 0 ? 1.0 : 0.0; }, -1, 1); }
  SECTION("gelu") { check_unary_backward(UnaryOp::Gelu, ref_gelu_grad, -3, 3); }
  SECTION("sqrt") { check_unary_backward(UnaryOp::Sqrt, [](double x) { return 0.5 / std::sqrt(x); }, 0.1, 4); }
  SECTION("rsqrt") {
    check_unary_backward(UnaryOp::Rsqrt, [](double x) { return -0.5 * std::pow(x, -1.5); }, 0.1, 4);
  }
  SECTION("abs") { check_unary_backward(UnaryOp::Abs, [](double x) { return x > 0 ? 1.0 : -1.0; }, -1, 1); }
  SECTION("square") { check_unary_backward(UnaryOp::Square, [](double x) { return 2 * x; }, -2, 2); }
  SECTION("reciprocal") { check_unary_backward(UnaryOp::Reciprocal, [](double x) { return -1 / (x * x); }, 0.2, 3); }
  SECTION("neg") { check_unary_backward(UnaryOp::Neg, [](double) { return -1.0; }, -1, 1); }
}

TEST_CASE("unary_backward rejects mismatched or missing saved tensors", "[elementwise]") {
  Tensor g = Tensor::ones({3, 4});
  REQUIRE_THROWS_WITH(backend::unary_backward(UnaryOp::Exp, g, Tensor(), Tensor()), Catch::Contains("exp_backward"));
  REQUIRE_THROWS_WITH(backend::unary_backward(UnaryOp::Log, g, Tensor::ones({4, 3}), Tensor()),
                      Catch::Contains("log_backward") && Catch::Contains("[3, 4]"));
  REQUIRE_THROWS_WITH(backend::unary_backward(UnaryOp::Relu, g, Tensor::ones({3, 4}, DType::F64), Tensor()),
                      Catch::Contains("relu_backward"));
}

// ---------------------------------------------------------------- binary forward

TEST_CASE("add broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Add, [](double a, double b) { return a + b; }, -1, 1, -1, 1);
}
TEST_CASE("sub broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Sub, [](double a, double b) { return a - b; }, -1, 1, -1, 1);
}
TEST_CASE("mul broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Mul, [](double a, double b) { return a * b; }, -2, 2, -2, 2);
}
TEST_CASE("div broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Div, [](double a, double b) { return a / b; }, -2, 2, 0.25, 2);
}
TEST_CASE("maximum broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Maximum, [](double a, double b) { return a > b ? a : b; }, -1, 1, -1, 1);
}
TEST_CASE("minimum broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Minimum, [](double a, double b) { return a < b ? a : b; }, -1, 1, -1, 1);
}
TEST_CASE("pow broadcasts like numpy", "[elementwise]") {
  check_binary(BinaryOp::Pow, [](double a, double b) { return std::pow(a, b); }, 0.1, 3, -2, 2);
}

TEST_CASE("maximum and minimum propagate NaN from either side", "[elementwise]") {
  const float nan = std::nanf("");
  Tensor a = Tensor::from_vector<float>({nan, 1.f, 2.f}, {3});
  Tensor b = Tensor::from_vector<float>({0.f, nan, 1.f}, {3});
  for (BinaryOp op : {BinaryOp::Maximum, BinaryOp::Minimum}) {
    std::vector<float> r = backend::binary(op, a, b).to_vector<float>();
    CHECK(std::isnan(r[0]));
    CHECK(std::isnan(r[1]));
    CHECK(r[2] == (op == BinaryOp::Maximum ? 2.f : 1.f));
  }
}

TEST_CASE("binary ops reject shapes that do not broadcast", "[elementwise]") {
  Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({4});
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Add, a, b),
                      Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Pow, Tensor::ones({3, 2}), Tensor::ones({2, 3})),
                      Catch::Contains("pow"));
}

TEST_CASE("binary ops reject mixed or integer dtypes", "[elementwise]") {
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Mul, Tensor::ones({3}), Tensor::ones({3}, DType::F64)),
                      Catch::Contains("mul") && Catch::Contains("dtype"));
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Sub, Tensor::arange(3), Tensor::arange(3)),
                      Catch::Contains("sub") && Catch::Contains("i64"));
  REQUIRE_THROWS_WITH(backend::binary_scalar(BinaryOp::Div, Tensor::arange(3), 2.0), Catch::Contains("div"));
}

TEST_CASE("binary ops on a broadcast of size zero give an empty result", "[elementwise]") {
  Tensor y = backend::binary(BinaryOp::Add, Tensor::ones({0, 3}), Tensor::ones({3}));
  CHECK(y.shape() == Shape{0, 3});
}

TEST_CASE("binary ops read expanded (stride-0) and offset views", "[elementwise]") {
  Tensor base = test::rand({4, 6}, 5, DType::F64);
  Tensor row = base.select(0, 2);                      // offset view [6]
  Tensor col = base.slice(1, 1, 6, 2);                 // [4, 3] with stride 2
  Tensor ex = Tensor::from_vector<double>({1, 2, 3}, {3, 1}).expand({3, 6});  // stride 0
  test::require_close(backend::binary(BinaryOp::Mul, ex, row),
                      ref_binary(ex.contiguous(), row.contiguous(), [](double a, double b) { return a * b; }));
  Tensor first = base.slice(1, 0, 1);                  // [4, 1] with stride 6
  test::require_close(backend::binary(BinaryOp::Sub, col, first),
                      ref_binary(col.contiguous(), first.contiguous(), [](double a, double b) { return a - b; }));
}

TEST_CASE("scalar variants apply the scalar on the right or on the left", "[elementwise]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool nc = GENERATE(false, true);
  const std::vector<std::pair<BinaryOp, std::function<double(double, double)>>> ops = {
      {BinaryOp::Add, [](double a, double b) { return a + b; }},
      {BinaryOp::Sub, [](double a, double b) { return a - b; }},
      {BinaryOp::Mul, [](double a, double b) { return a * b; }},
      {BinaryOp::Div, [](double a, double b) { return a / b; }},
      {BinaryOp::Maximum, [](double a, double b) { return a > b ? a : b; }},
      {BinaryOp::Minimum, [](double a, double b) { return a < b ? a : b; }},
      {BinaryOp::Pow, [](double a, double b) { return std::pow(a, b); }}};
  for (const Shape& s : kShapes) {
    Tensor x = test::rand(s, 77, dt, 0.5, 2.0);
    if (nc) x = test::non_contiguous(x);
    for (const auto& [op, ref] : ops) {
      for (double sc : {0.75, 2.0, -1.5}) {
        INFO(backend::binary_name(op) << " with scalar " << sc << " on " << x.str());
        test::require_close(backend::binary_scalar(op, x, sc), ref_unary(x, [&](double v) { return ref(v, sc); }));
        if (op == BinaryOp::Pow && sc < 0) continue;  // s^x needs a positive base
        test::require_close(backend::scalar_binary(op, sc, x), ref_unary(x, [&](double v) { return ref(sc, v); }));
      }
    }
  }
}

// ---------------------------------------------------------------- comparisons, where, masked_fill

TEST_CASE("compare gives 1/0 in the operands' dtype with broadcasting", "[elementwise]") {
  const std::vector<std::pair<CompareOp, std::function<bool(double, double)>>> ops = {
      {CompareOp::Eq, [](double a, double b) { return a == b; }},
      {CompareOp::Ne, [](double a, double b) { return a != b; }},
      {CompareOp::Lt, [](double a, double b) { return a < b; }},
      {CompareOp::Le, [](double a, double b) { return a <= b; }},
      {CompareOp::Gt, [](double a, double b) { return a > b; }},
      {CompareOp::Ge, [](double a, double b) { return a >= b; }}};
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I32, DType::I64);
  // few distinct values so equality actually occurs
  Tensor a = test::non_contiguous(test::rand({3, 1, 5}, 8, DType::F64, 0, 3).to(DType::I64).to(dt));
  Tensor b = test::rand({4, 5}, 9, DType::F64, 0, 3).to(DType::I64).to(dt);
  for (const auto& [op, ref] : ops) {
    Tensor y = backend::compare(op, a, b);
    REQUIRE(y.dtype() == dt);
    test::require_close(y, ref_binary(a, b, [&](double u, double v) { return ref(u, v) ? 1.0 : 0.0; }), 0, 0);
    Tensor ys = backend::compare_scalar(op, a, 1.0);
    test::require_close(ys, ref_unary(a, [&](double u) { return ref(u, 1.0) ? 1.0 : 0.0; }), 0, 0);
  }
}

TEST_CASE("compare_scalar on integers does not truncate a fractional scalar", "[elementwise]") {
  Tensor a = Tensor::from_vector<int64_t>({-1, 0, 1, 2}, {4});
  test::require_close(backend::compare_scalar(CompareOp::Lt, a, 0.5), {1, 1, 0, 0});
  test::require_close(backend::compare_scalar(CompareOp::Eq, a, 0.5), {0, 0, 0, 0});
  test::require_close(backend::compare_scalar(CompareOp::Ge, a, -0.5), {0, 1, 1, 1});
}

TEST_CASE("compare rejects operands of different dtypes", "[elementwise]") {
  REQUIRE_THROWS_WITH(backend::compare(CompareOp::Lt, Tensor::ones({2}), Tensor::arange(2)),
                      Catch::Contains("lt") && Catch::Contains("dtype"));
  REQUIRE_THROWS_WITH(backend::compare(CompareOp::Eq, Tensor::ones({2}), Tensor::ones({3})),
                      Catch::Contains("eq") && Catch::Contains("broadcast"));
}

TEST_CASE("where picks from a or b and broadcasts all three", "[elementwise]") {
  const DType cond_dt = GENERATE(DType::F32, DType::I64, DType::I32);
  const bool nc = GENERATE(false, true);
  Tensor cond = test::rand({3, 1, 5}, 1, DType::F64, -1, 1);
  cond = backend::compare_scalar(CompareOp::Gt, cond, 0.0).to(cond_dt);
  Tensor a = test::rand({4, 5}, 2, DType::F64);
  Tensor b = test::rand({3, 4, 1}, 3, DType::F64);
  if (nc) a = test::non_contiguous(a), b = test::non_contiguous(b), cond = test::non_contiguous(cond);
  Tensor y = backend::where(cond, a, b);
  REQUIRE(y.shape() == Shape{3, 4, 5});
  std::vector<double> c = cond.to_vector<double>(), av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> expected;
  for (int64_t i = 0; i < 60; ++i) {
    std::vector<int64_t> idx = unravel(i, {3, 4, 5});
    const bool take_a = c[size_t(broadcast_source(idx, cond.shape()))] != 0;
    expected.push_back(take_a ? av[size_t(broadcast_source(idx, a.shape()))] : bv[size_t(broadcast_source(idx, b.shape()))]);
  }
  test::require_close(y, expected, 0, 0);
  SECTION("and rejects a and b of different dtypes") {
    REQUIRE_THROWS_WITH(backend::where(cond, a, b.to(DType::F32)), Catch::Contains("where"));
    REQUIRE_THROWS_WITH(backend::where(cond, Tensor::ones({2, 2}, DType::F64), a), Catch::Contains("where"));
  }
}

TEST_CASE("masked_fill writes the value where the broadcast mask is set", "[elementwise]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I64);
  const bool nc = GENERATE(false, true);
  // attention-style mask [B, 1, 1, T] over scores [B, H, T, T]
  Tensor x = test::rand({2, 3, 4, 4}, 5, DType::F64, -5, 5).to(dt);
  Tensor mask = backend::compare_scalar(CompareOp::Gt, test::rand({2, 1, 1, 4}, 6, DType::F64), 0.2);
  if (nc) x = test::non_contiguous(x), mask = test::non_contiguous(mask);
  const double fill = dt == DType::I64 ? -7.0 : -1e9;
  Tensor y = backend::masked_fill(x, mask, fill);
  REQUIRE(y.dtype() == dt);
  std::vector<double> xv = x.to_vector<double>(), mv = mask.to_vector<double>(), expected;
  for (int64_t i = 0; i < x.numel(); ++i)
    expected.push_back(mv[size_t(broadcast_source(unravel(i, x.shape()), mask.shape()))] != 0 ? fill : xv[size_t(i)]);
  test::require_close(y, expected, 0, 0);
  SECTION("and rejects a mask that would grow x") {
    REQUIRE_THROWS_WITH(backend::masked_fill(Tensor::ones({4}), Tensor::ones({3, 4}), 0.0),
                        Catch::Contains("masked_fill") && Catch::Contains("[3, 4]"));
    REQUIRE_THROWS_WITH(backend::masked_fill(Tensor::ones({4, 3}), Tensor::ones({4}), 0.0),
                        Catch::Contains("masked_fill"));
  }
}

// ---------------------------------------------------------------- sum_to_shape

TEST_CASE("sum_to_shape sums broadcast dims back to the operand's shape", "[elementwise]") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4, 5}, {5}},    {{3, 4, 5}, {4, 1}},  {{3, 4, 5}, {3, 1, 5}}, {{3, 4, 5}, {}},      {{3, 4, 5}, {1, 1, 1}},
      {{3, 4, 5}, {3, 4, 1}}, {{2, 3, 1, 5}, {3, 1, 1}}, {{7, 13}, {7, 13}}, {{301, 257}, {257}}, {{1, 6}, {6}},
      {{2, 300, 130}, {2, 1, 130}}};
  const bool nc = GENERATE(false, true);
  const DType dt = GENERATE(DType::F32, DType::F64);
  for (const auto& [gs, target] : cases) {
    Tensor g = test::rand(gs, 12, dt);
    if (nc) g = test::non_contiguous(g);
    Tensor r = backend::sum_to_shape(g, target);
    INFO("sum_to_shape " << g.str() << " -> " << shape_str(target));
    REQUIRE(r.shape() == target);
    std::vector<double> gv = g.to_vector<double>(), expected(size_t(shape_numel(target)), 0.0);
    for (int64_t i = 0; i < g.numel(); ++i)
      expected[size_t(broadcast_source(unravel(i, gs), target))] += gv[size_t(i)];
    test::require_close(r, expected, dt == DType::F32 ? 1e-5 : 1e-12, 1e-5);
  }
}

TEST_CASE("sum_to_shape rejects a shape that does not broadcast to the gradient", "[elementwise]") {
  REQUIRE_THROWS_WITH(backend::sum_to_shape(Tensor::ones({3, 4}), {3}),
                      Catch::Contains("sum_to_shape") && Catch::Contains("[3, 4]"));
  REQUIRE_THROWS_WITH(backend::sum_to_shape(Tensor::ones({4}), {2, 4}), Catch::Contains("sum_to_shape"));
}

// ---------------------------------------------------------------- differentiable wrappers

TEST_CASE("gradcheck: neg", "[elementwise]") { gradcheck_unary(strata::neg, -1, 1); }
TEST_CASE("gradcheck: exp", "[elementwise]") { gradcheck_unary(strata::exp, -1, 1); }
TEST_CASE("gradcheck: log", "[elementwise]") { gradcheck_unary(strata::log, 0.5, 2); }
TEST_CASE("gradcheck: tanh", "[elementwise]") { gradcheck_unary(strata::tanh, -2, 2); }
TEST_CASE("gradcheck: sigmoid", "[elementwise]") { gradcheck_unary(strata::sigmoid, -3, 3); }
TEST_CASE("gradcheck: relu away from the kink", "[elementwise]") { gradcheck_unary(strata::relu, 0.1, 1, true); }
TEST_CASE("gradcheck: gelu", "[elementwise]") { gradcheck_unary(strata::gelu, -3, 3); }
TEST_CASE("gradcheck: sqrt", "[elementwise]") { gradcheck_unary(strata::sqrt, 0.5, 2); }
TEST_CASE("gradcheck: rsqrt", "[elementwise]") { gradcheck_unary(strata::rsqrt, 0.5, 2); }
TEST_CASE("gradcheck: abs away from the kink", "[elementwise]") { gradcheck_unary(strata::abs, 0.1, 1, true); }
TEST_CASE("gradcheck: square", "[elementwise]") { gradcheck_unary(strata::square, -1, 1); }
TEST_CASE("gradcheck: reciprocal away from the pole", "[elementwise]") {
  gradcheck_unary(strata::reciprocal, 0.3, 1, true);
}

TEST_CASE("gradcheck: add with broadcasting", "[elementwise]") { gradcheck_binary(strata::add, -1, 1, -1, 1); }
TEST_CASE("gradcheck: sub with broadcasting", "[elementwise]") { gradcheck_binary(strata::sub, -1, 1, -1, 1); }
TEST_CASE("gradcheck: mul with broadcasting", "[elementwise]") { gradcheck_binary(strata::mul, -1, 1, -1, 1); }
TEST_CASE("gradcheck: div with broadcasting", "[elementwise]") { gradcheck_binary(strata::div, -1, 1, 0.5, 2); }
TEST_CASE("gradcheck: maximum with broadcasting", "[elementwise]") {
  gradcheck_binary(strata::maximum, -1, 1, -1, 1);
}
TEST_CASE("gradcheck: minimum with broadcasting", "[elementwise]") {
  gradcheck_binary(strata::minimum, -1, 1, -1, 1);
}
TEST_CASE("gradcheck: pow of two tensors with broadcasting", "[elementwise]") {
  gradcheck_binary(static_cast<BinaryFn>(strata::pow), 0.5, 2, -2, 2);
}

TEST_CASE("maximum and minimum split the gradient evenly at ties", "[elementwise]") {
  Tensor a = Tensor::from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  Tensor b = Tensor::from_vector<double>({1, 5, 0}, {3}).set_requires_grad();
  strata::sum(strata::maximum(a, b)).backward();
  test::require_close(a.grad(), {0.5, 0, 1});
  test::require_close(b.grad(), {0.5, 1, 0});
  a.zero_grad();
  b.zero_grad();
  strata::sum(strata::minimum(a, b)).backward();
  test::require_close(a.grad(), {0.5, 1, 0});
  test::require_close(b.grad(), {0.5, 0, 1});
}

TEST_CASE("pow gives no NaN gradient for the exponent at a zero base", "[elementwise]") {
  Tensor a = Tensor::from_vector<double>({0, 2}, {2});
  Tensor b = Tensor::from_vector<double>({2, 3}, {2}).set_requires_grad();
  strata::sum(strata::pow(a, b)).backward();
  test::require_close(b.grad(), {0, 8 * std::log(2.0)});
}

TEST_CASE("gradcheck: scalar ops on either side", "[elementwise]") {
  const bool nc = GENERATE(false, true);
  Tensor x = test::grad_input({3, 5}, 41, nc, 0.5, 2);
  const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> fns = {
      {"x + s", [](const Tensor& t) { return t + 1.5; }},
      {"s + x", [](const Tensor& t) { return 1.5 + t; }},
      {"x - s", [](const Tensor& t) { return t - 0.25; }},
      {"s - x", [](const Tensor& t) { return 3.0 - t; }},
      {"x * s", [](const Tensor& t) { return t * -2.5; }},
      {"s * x", [](const Tensor& t) { return 0.5 * t; }},
      {"x / s", [](const Tensor& t) { return t / 4.0; }},
      {"s / x", [](const Tensor& t) { return 2.0 / t; }},
      {"x ^ p", [](const Tensor& t) { return strata::pow(t, 2.5); }},
      {"x ^ 2", [](const Tensor& t) { return strata::pow(t, 2.0); }},
      {"x ^ 0", [](const Tensor& t) { return strata::pow(t, 0.0); }},
      {"s ^ x", [](const Tensor& t) { return strata::pow(1.7, t); }},
      {"maximum(x, s)", [](const Tensor& t) { return strata::maximum(t, 1.0); }},
      {"minimum(x, s)", [](const Tensor& t) { return strata::minimum(t, 1.0); }},
      {"clamp(x, lo, hi)", [](const Tensor& t) { return strata::clamp(t, 0.8, 1.6); }},
      {"-x", [](const Tensor& t) { return -t; }},
      {"add_scalar", [](const Tensor& t) { return strata::add_scalar(t, 2); }},
      {"mul_scalar", [](const Tensor& t) { return strata::mul_scalar(t, 3); }}};
  for (const auto& [name, f] : fns) {
    INFO(name);
    test::require_gradcheck([&f = f](const std::vector<Tensor>& in) { return f(in[0]); }, {x});
  }
}

TEST_CASE("operators compute the same values as the backend ops", "[elementwise]") {
  Tensor a = test::rand({4, 5}, 51, DType::F32, 0.5, 2), b = test::rand({5}, 52, DType::F32, 0.5, 2);
  auto ref = [&](std::function<double(double, double)> f) { return ref_binary(a, b, f); };
  test::require_close(a + b, ref([](double u, double v) { return u + v; }));
  test::require_close(a - b, ref([](double u, double v) { return u - v; }));
  test::require_close(a * b, ref([](double u, double v) { return u * v; }));
  test::require_close(a / b, ref([](double u, double v) { return u / v; }));
  test::require_close(-a, ref_unary(a, [](double u) { return -u; }));
  test::require_close(3.0 - a, ref_unary(a, [](double u) { return 3 - u; }));
  test::require_close(2.0 / a, ref_unary(a, [](double u) { return 2 / u; }));
  test::require_close(strata::clamp(a, 0.9, 1.1),
                      ref_unary(a, [](double u) { return std::min(1.1, std::max(0.9, u)); }));
  REQUIRE_THROWS_WITH(strata::clamp(a, 2, 1), Catch::Contains("clamp"));
}

TEST_CASE("gradcheck: a composite expression through several ops", "[elementwise]") {
  Tensor x = test::grad_input({3, 4}, 61, true), w = test::grad_input({4}, 62);
  test::require_gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor h = strata::gelu(in[0] * in[1] + 0.5);
        return strata::tanh(h) * strata::sigmoid(in[0]) - strata::square(h) / 3.0;
      },
      {x, w});
}

TEST_CASE("gradcheck: where routes gradients to both branches", "[elementwise]") {
  const bool nc = GENERATE(false, true);
  Tensor cond = backend::compare_scalar(CompareOp::Gt, test::rand({3, 1, 5}, 71, DType::F64), 0.0);
  Tensor a = test::grad_input({4, 5}, 72, nc), b = test::grad_input({3, 4, 1}, 73, nc);
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return strata::where(cond, in[0], in[1]); }, {a, b});
  SECTION("with a constant branch") {
    Tensor c = Tensor::zeros({}, DType::F64);
    test::require_gradcheck([&](const std::vector<Tensor>& in) { return strata::where(cond, in[0], c); }, {a});
  }
}

TEST_CASE("gradcheck: masked_fill passes no gradient through filled places", "[elementwise]") {
  const bool nc = GENERATE(false, true);
  Tensor mask = backend::compare_scalar(CompareOp::Gt, test::rand({2, 1, 4}, 81, DType::F64), 0.0);
  Tensor x = test::grad_input({2, 3, 4}, 82, nc);
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return strata::masked_fill(in[0], mask, -3.0); }, {x});
  x.zero_grad();
  strata::sum(strata::masked_fill(x, mask, -3.0)).backward();
  std::vector<double> gv = x.grad().to_vector<double>(), mv = mask.to_vector<double>();
  for (int64_t i = 0; i < x.numel(); ++i)
    CHECK(gv[size_t(i)] == (mv[size_t(broadcast_source(unravel(i, x.shape()), mask.shape()))] != 0 ? 0.0 : 1.0));
}

TEST_CASE("comparisons carry no gradient", "[elementwise]") {
  Tensor a = test::grad_input({3}, 91), b = test::grad_input({3}, 92);
  for (const Tensor& c : {strata::eq(a, b), strata::ne(a, b), strata::lt(a, b), strata::le(a, b), strata::gt(a, b),
                          strata::ge(a, b), strata::gt(a, 0.0), strata::le(a, 0.5)}) {
    CHECK(!c.requires_grad());
    CHECK(c.grad_fn() == nullptr);
  }
  test::require_close(strata::lt(a, b), ref_binary(a, b, [](double u, double v) { return u < v ? 1.0 : 0.0; }), 0, 0);
}

TEST_CASE("differentiable ops record only when an input needs grad", "[elementwise]") {
  Tensor x = test::grad_input({3}, 93);
  CHECK(strata::exp(x).grad_fn() != nullptr);
  CHECK(strata::exp(x.detach()).grad_fn() == nullptr);
  NoGradGuard guard;
  CHECK(strata::exp(x).grad_fn() == nullptr);
  CHECK((x * x).grad_fn() == nullptr);
}

TEST_CASE("binary gradients are summed back to broadcast operand shapes", "[elementwise]") {
  Tensor a = Tensor::ones({2, 3}, DType::F64).set_requires_grad();
  Tensor b = Tensor::from_vector<double>({1, 2, 3}, {3}).set_requires_grad();
  Tensor s = Tensor::full({}, 2.0, DType::F64).set_requires_grad();
  strata::sum((a * b) * s).backward();
  REQUIRE(b.grad().shape() == Shape{3});
  test::require_close(b.grad(), {4, 4, 4});
  REQUIRE(s.grad().shape() == Shape{});
  test::require_close(s.grad(), {12});
  test::require_close(a.grad(), {2, 4, 6, 2, 4, 6});
}

TEST_CASE("a gradient handed to two inputs is not shared by their accumulations", "[autograd]") {
  // add's backward returns the same tensor for both inputs; a's slot later
  // accumulates z's gradient in place, which must not leak into b's.
  Tensor a = Tensor::full({3}, 1.0).set_requires_grad();
  Tensor b = Tensor::full({3}, 1.0).set_requires_grad();
  Tensor z = a * 2.0;
  Tensor y = a + b;
  (sum(y) + sum(z)).backward();
  CHECK(a.grad().to_vector<float>() == std::vector<float>{3, 3, 3});
  CHECK(b.grad().to_vector<float>() == std::vector<float>{1, 1, 1});
}
