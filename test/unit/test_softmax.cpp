#include <cmath>
#include <limits>

#include "strata/autograd/node.h"
#include "strata/autograd/ops_nn.h"
#include "strata/backend/softmax.h"
#include "test_util.h"

using namespace strata;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// [outer, n, inner] view of a row-major shape split at `axis`.
struct Lanes {
  int64_t outer = 1, n = 1, inner = 1;
};
Lanes lanes(const Shape& s, int64_t axis) {
  Lanes l;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    if (d < axis) l.outer *= s[d];
    else if (d == axis) l.n = s[d];
    else l.inner *= s[d];
  }
  return l;
}
int64_t wrap(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

// Softmax / log-softmax in double with plain loops, lane by lane.
Tensor reference_softmax(const Tensor& x, int64_t axis, bool log) {
  std::vector<double> v = x.to_vector<double>(), out(v.size());
  Lanes l = lanes(x.shape(), wrap(axis, x.dim()));
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.inner; ++k) {
      auto at = [&](int64_t j) { return size_t((o * l.n + j) * l.inner + k); };
      double m = -kInf;
      for (int64_t j = 0; j < l.n; ++j) m = std::max(m, v[at(j)]);
      if (m == -kInf) {  // the documented choice for a fully -inf lane
        for (int64_t j = 0; j < l.n; ++j) out[at(j)] = log ? -kInf : 0.0;
        continue;
      }
      double s = 0;
      for (int64_t j = 0; j < l.n; ++j) s += std::exp(v[at(j)] - m);
      for (int64_t j = 0; j < l.n; ++j)
        out[at(j)] = log ? v[at(j)] - m - std::log(s) : std::exp(v[at(j)] - m) / s;
    }
  return Tensor::from_vector(out, x.shape()).to(x.dtype());
}

// dx of softmax (log=false: y*(g - sum g*y)) or log_softmax (g - exp(y) sum g).
Tensor reference_backward(const Tensor& g, const Tensor& y, int64_t axis, bool log) {
  std::vector<double> gv = g.to_vector<double>(), yv = y.to_vector<double>(), out(gv.size());
  Lanes l = lanes(y.shape(), wrap(axis, y.dim()));
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t k = 0; k < l.inner; ++k) {
      auto at = [&](int64_t j) { return size_t((o * l.n + j) * l.inner + k); };
      double s = 0;
      for (int64_t j = 0; j < l.n; ++j) s += log ? gv[at(j)] : gv[at(j)] * yv[at(j)];
      for (int64_t j = 0; j < l.n; ++j)
        out[at(j)] = log ? gv[at(j)] - std::exp(yv[at(j)]) * s : yv[at(j)] * (gv[at(j)] - s);
    }
  return Tensor::from_vector(out, y.shape()).to(y.dtype());
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{17}, {7, 13}, {3, 5, 4}, {2, 3, 1, 5}, {4, 33}};
  return s;
}

}  // namespace

TEST_CASE("softmax matches a reference loop along every axis", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto seed = GENERATE(1u, 2u);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, seed, dt, -5, 5);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis);
      test::require_close(backend::softmax(x, axis), reference_softmax(x, axis, false));
    }
  }
}

TEST_CASE("log_softmax matches a reference loop along every axis", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto seed = GENERATE(3u, 4u);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, seed, dt, -5, 5);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis);
      test::require_close(backend::log_softmax(x, axis), reference_softmax(x, axis, true));
    }
  }
}

TEST_CASE("softmax of non-contiguous inputs matches the contiguous result", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{19}}) {
    Tensor x = test::rand(s, 5, dt, -3, 3);
    Tensor xn = test::non_contiguous(x);
    REQUIRE_FALSE(xn.is_contiguous());
    for (int64_t axis = 0; axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis);
      test::require_close(backend::softmax(xn, axis), backend::softmax(x, axis));
      test::require_close(backend::log_softmax(xn, axis), backend::log_softmax(x, axis));
    }
  }
}

TEST_CASE("softmax of a sliced view with gaps between unit-stride rows matches the reference", "[softmax]") {
  // Unit stride in the last dim but not contiguous: the panel path with gaps.
  auto dt = GENERATE(DType::F32, DType::F64);
  Tensor base = test::rand({5, 9, 12}, 6, dt, -4, 4);
  Tensor x = base.slice(2, 1, 11).slice(0, 1, 5);
  REQUIRE_FALSE(x.is_contiguous());
  REQUIRE(x.strides().back() == 1);
  Tensor xc = x.contiguous();
  for (int64_t axis : {0, 1, 2}) {
    INFO("axis " << axis);
    test::require_close(backend::softmax(x, axis), reference_softmax(xc, axis, false));
    test::require_close(backend::log_softmax(x, axis), reference_softmax(xc, axis, true));
    Tensor y = backend::softmax(xc, axis);
    Tensor g = base.slice(2, 0, 10).slice(0, 0, 4);  // another gapped view as the gradient
    test::require_close(backend::softmax_backward(g, y, axis), reference_backward(g.contiguous(), y, axis, false));
  }
}

TEST_CASE("softmax of an empty tensor is empty", "[softmax]") {
  for (const Shape& s : {Shape{0, 5}, Shape{5, 0}, Shape{2, 0, 3}}) {
    Tensor x = Tensor::zeros(s);
    for (int64_t axis = 0; axis < int64_t(s.size()); ++axis) {
      CHECK(backend::softmax(x, axis).shape() == s);
      CHECK(backend::log_softmax(x, axis).shape() == s);
      CHECK(backend::softmax_backward(x, x, axis).shape() == s);
      CHECK(backend::log_softmax_backward(x, x, axis).shape() == s);
    }
  }
}

TEST_CASE("softmax is correct for every lane length around the vector width", "[softmax]") {
  // Lengths 1..40 cover whole vectors, tails and single-element lanes.
  auto dt = GENERATE(DType::F32, DType::F64);
  for (int64_t n = 1; n <= 40; ++n) {
    Tensor x = test::rand({3, n}, uint64_t(n), dt, -8, 8);
    INFO("lane length " << n);
    test::require_close(backend::softmax(x, -1), reference_softmax(x, -1, false));
    test::require_close(backend::log_softmax(x, -1), reference_softmax(x, -1, true));
  }
}

TEST_CASE("softmax of a large batch (threaded path) matches the reference", "[softmax]") {
  Tensor x = test::rand({67, 1031}, 9, DType::F32, -20, 20);
  test::require_close(backend::softmax(x, 1), reference_softmax(x, 1, false), 1e-5, 1e-7);
  test::require_close(backend::log_softmax(x, 1), reference_softmax(x, 1, true), 1e-5, 1e-5);
  Tensor xt = test::rand({1031, 67}, 10, DType::F32, -20, 20);
  test::require_close(backend::softmax(xt, 0), reference_softmax(xt, 0, false), 1e-5, 1e-7);
}

TEST_CASE("softmax over a non-last axis handles lanes wider than one panel", "[softmax]") {
  // 300 lanes side by side: one full 256-lane panel plus a partial one, at
  // several positions of the leading dim.
  auto dt = GENERATE(DType::F32, DType::F64);
  Tensor x = test::rand({3, 50, 300}, 13, dt, -6, 6);
  for (int64_t axis : {0, 1, -2}) {
    INFO("axis " << axis);
    test::require_close(backend::softmax(x, axis), reference_softmax(x, axis, false), 1e-5, 1e-7);
    test::require_close(backend::log_softmax(x, axis), reference_softmax(x, axis, true), 1e-5, 1e-5);
    Tensor g = test::rand(x.shape(), 14, dt);
    Tensor y = backend::softmax(x, axis), ly = backend::log_softmax(x, axis);
    test::require_close(backend::softmax_backward(g, y, axis), reference_backward(g, y, axis, false), 1e-5, 1e-6);
    test::require_close(backend::log_softmax_backward(g, ly, axis), reference_backward(g, ly, axis, true), 1e-5,
                        1e-6);
  }
}

TEST_CASE("softmax exp stays accurate across the whole f32 range of shifted logits", "[softmax]") {
  // One lane with values spread over [-100, 0]: exercises the vector exp from
  // 1 down past f32 underflow (probabilities below ~1e-38 flush to 0).
  const int64_t n = 2001;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = -100.0f * float(i) / float(n - 1);
  Tensor x = Tensor::from_vector(v, {1, n});
  Tensor y = backend::softmax(x, 1);
  test::require_close(y, reference_softmax(x, 1, false), 2e-6, 1e-37);
  test::require_close(backend::log_softmax(x, 1), reference_softmax(x, 1, true), 1e-6, 1e-5);
}

TEST_CASE("softmax lanes sum to one and are non-negative", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  Tensor x = test::rand({6, 7, 11}, 11, dt, -30, 30);
  for (int64_t axis : {0, 1, 2}) {
    std::vector<double> y = backend::softmax(x, axis).to_vector<double>();
    Lanes l = lanes(x.shape(), axis);
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t k = 0; k < l.inner; ++k) {
        double s = 0;
        for (int64_t j = 0; j < l.n; ++j) {
          double p = y[size_t((o * l.n + j) * l.inner + k)];
          REQUIRE(p >= 0.0);
          s += p;
        }
        REQUIRE(s == Approx(1.0).epsilon(dt == DType::F32 ? 1e-6 : 1e-13));
      }
  }
}

TEST_CASE("softmax is invariant to a constant added to every logit of a lane", "[softmax]") {
  Tensor x = test::rand({5, 9}, 12, DType::F64, -2, 2);
  std::vector<double> v = x.to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) v[i] += 100.0 * double(i / 9);  // a different shift per row
  Tensor shifted = Tensor::from_vector(v, {5, 9});
  test::require_close(backend::softmax(shifted, 1), backend::softmax(x, 1), 1e-12, 1e-14);
}

TEST_CASE("softmax is stable for huge logits", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  // exp(+-1e4) overflows / underflows any float type: only the max shift keeps
  // these finite and accurate.
  Tensor x = Tensor::from_vector<double>({1e4, 1e4 - 1, 1e4 - 2, -1e4, -1e4, -1e4 + 3, -1e4 + 1, -1e4}, {2, 4})
                 .to(dt);
  Tensor y = backend::softmax(x, 1);
  Tensor ly = backend::log_softmax(x, 1);
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0), e3 = std::exp(-3.0);
  const double z0 = 1 + e1 + e2;        // row 0 relative to its max 1e4; exp(-2e4) vanishes
  const double z1 = e3 + 1 + e2 + e3;   // row 1 relative to its max -1e4 + 3
  test::require_close(y, {1 / z0, e1 / z0, e2 / z0, 0.0, e3 / z1, 1 / z1, e2 / z1, e3 / z1}, 1e-6, 1e-7);
  test::require_close(ly,
                      {-std::log(z0), -1 - std::log(z0), -2 - std::log(z0), -2e4 - std::log(z0), -3 - std::log(z1),
                       -std::log(z1), -2 - std::log(z1), -3 - std::log(z1)},
                      1e-6, 1e-6);
}

TEST_CASE("softmax gives exactly zero probability to -inf logits", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  const double inf = kInf;
  // masked rows as attention produces them; along axis 0, column 1 is fully masked
  Tensor x = Tensor::from_vector<double>({0.5, -inf, 2.0, -inf, 1.0, -inf, -inf, 3.0, -1.0, -inf, 0.0, 4.0}, {3, 4})
                 .to(dt);
  for (int64_t axis : {0, 1}) {
    INFO("axis " << axis);
    std::vector<double> xv = x.to_vector<double>();
    std::vector<double> y = backend::softmax(x, axis).to_vector<double>();
    std::vector<double> ly = backend::log_softmax(x, axis).to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i) {
      if (std::isinf(xv[i])) {
        CHECK(y[i] == 0.0);
        CHECK(ly[i] == -inf);
      } else {
        CHECK(y[i] > 0.0);
        CHECK(std::isfinite(ly[i]));
      }
    }
    test::require_close(backend::softmax(x, axis), reference_softmax(x, axis, false));
  }
}

TEST_CASE("a fully -inf lane gives zeros from softmax and -inf from log_softmax", "[softmax]") {
  // Documented choice: a fully masked lane has no mass to distribute; zeros
  // (not NaN) keep a padded attention row from poisoning the batch.
  auto dt = GENERATE(DType::F32, DType::F64);
  const double inf = kInf;
  Tensor x = Tensor::from_vector<double>({-inf, -inf, -inf, 1.0, 2.0, 3.0}, {2, 3}).to(dt);
  Tensor y = backend::softmax(x, 1);
  test::require_close(y.narrow(0, 0, 1), {0.0, 0.0, 0.0});
  test::require_close(y.narrow(0, 1, 1), reference_softmax(x.narrow(0, 1, 1), 1, false));
  std::vector<double> ly = backend::log_softmax(x, 1).to_vector<double>();
  for (int i = 0; i < 3; ++i) CHECK(ly[size_t(i)] == -inf);
  // the same lanes stored as columns (the panel path along axis 0)
  Tensor xt = x.transpose(0, 1).contiguous();
  test::require_close(backend::softmax(xt, 0), y.transpose(0, 1));
  test::require_close(backend::log_softmax(xt, 0), backend::log_softmax(x, 1).transpose(0, 1));
  // the gradient through a fully masked softmax lane is zero, not NaN
  Tensor g = test::rand({2, 3}, 3, dt);
  std::vector<double> dx = backend::softmax_backward(g, y, 1).to_vector<double>();
  for (int i = 0; i < 3; ++i) CHECK(dx[size_t(i)] == 0.0);
  for (double v : dx) CHECK(std::isfinite(v));
}

TEST_CASE("softmax propagates NaN to its lane only", "[softmax]") {
  auto log = GENERATE(false, true);
  Tensor x = Tensor::from_vector<float>({1.0f, std::nanf(""), 2.0f, 1.0f, 2.0f, 3.0f}, {2, 3});
  auto f = [&](const Tensor& t, int64_t axis) {
    return log ? backend::log_softmax(t, axis) : backend::softmax(t, axis);
  };
  std::vector<double> y = f(x, 1).to_vector<double>();
  for (int i = 0; i < 3; ++i) CHECK(std::isnan(y[size_t(i)]));
  for (int i = 3; i < 6; ++i) CHECK(std::isfinite(y[size_t(i)]));
  // the same lanes as columns (panel path)
  std::vector<double> yt = f(x.transpose(0, 1).contiguous(), 0).to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    CHECK(std::isnan(yt[size_t(2 * i)]));
    CHECK(std::isfinite(yt[size_t(2 * i + 1)]));
  }
}

TEST_CASE("softmax_backward matches y * (g - sum(g * y)) along every axis", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, 21, dt, -3, 3);
    Tensor g = test::rand(s, 22, dt, -1, 1);
    if (noncontig) g = test::non_contiguous(g);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis);
      Tensor y = backend::softmax(x, axis);
      Tensor yy = noncontig ? test::non_contiguous(y) : y;
      test::require_close(backend::softmax_backward(g, yy, axis), reference_backward(g, y, axis, false));
    }
  }
}

TEST_CASE("log_softmax_backward matches g - exp(y) * sum(g) along every axis", "[softmax]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    Tensor x = test::rand(s, 23, dt, -3, 3);
    Tensor g = test::rand(s, 24, dt, -1, 1);
    if (noncontig) g = test::non_contiguous(g);
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis);
      Tensor y = backend::log_softmax(x, axis);
      Tensor yy = noncontig ? test::non_contiguous(y) : y;
      test::require_close(backend::log_softmax_backward(g, yy, axis), reference_backward(g, y, axis, true));
    }
  }
}

TEST_CASE("softmax backward accepts a broadcast (stride 0) gradient", "[softmax]") {
  Tensor x = test::rand({4, 6}, 25, DType::F64);
  Tensor g = Tensor::from_vector<double>({0.5, -1, 2, 0, 1, 3}, {6}).expand({4, 6});
  Tensor y = backend::softmax(x, 1);
  test::require_close(backend::softmax_backward(g, y, 1), reference_backward(g.contiguous(), y, 1, false));
  Tensor ly = backend::log_softmax(x, 0);
  test::require_close(backend::log_softmax_backward(g, ly, 0), reference_backward(g.contiguous(), ly, 0, true));
}

TEST_CASE("softmax passes gradcheck along every axis", "[softmax]") {
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : {Shape{7}, Shape{4, 5}, Shape{2, 3, 4}}) {
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis << " noncontig " << noncontig);
      test::require_gradcheck([&](const std::vector<Tensor>& in) { return softmax(in[0], axis); },
                              {test::grad_input(s, 31, noncontig, -2, 2)});
    }
  }
}

TEST_CASE("log_softmax passes gradcheck along every axis", "[softmax]") {
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : {Shape{7}, Shape{4, 5}, Shape{2, 3, 4}}) {
    for (int64_t axis = -int64_t(s.size()); axis < int64_t(s.size()); ++axis) {
      INFO("shape " << shape_str(s) << " axis " << axis << " noncontig " << noncontig);
      test::require_gradcheck([&](const std::vector<Tensor>& in) { return log_softmax(in[0], axis); },
                              {test::grad_input(s, 32, noncontig, -2, 2)});
    }
  }
}

TEST_CASE("softmax composed with log_softmax passes gradcheck", "[softmax]") {
  // Two recorded ops in a chain, over different axes.
  test::require_gradcheck(
      [](const std::vector<Tensor>& in) { return log_softmax(softmax(in[0], 0), 1); },
      {test::grad_input({3, 5}, 33, true)});
}

TEST_CASE("softmax records a node only when its input needs a gradient", "[softmax]") {
  Tensor x = test::rand({2, 3}, 34, DType::F64);
  CHECK(softmax(x, 1).grad_fn() == nullptr);
  CHECK(log_softmax(x, 1).grad_fn() == nullptr);
  x.set_requires_grad(true);
  Tensor y = softmax(x, 1);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->name()) == "softmax");
  test::require_close(y, backend::softmax(x.detach(), 1));
  // every lane sums to 1, so the gradient of the total is zero
  y.backward(Tensor::ones({2, 3}, DType::F64));
  test::require_close(x.grad(), std::vector<double>(6, 0.0), 0, 1e-15);
}

TEST_CASE("softmax rejects bad axes, integer tensors and mismatched gradients", "[softmax]") {
  Tensor x = test::rand({2, 3}, 35);
  REQUIRE_THROWS_WITH(backend::softmax(x, 2), Catch::Contains("softmax") && Catch::Contains("axis 2"));
  REQUIRE_THROWS_WITH(backend::softmax(x, -3), Catch::Contains("softmax"));
  REQUIRE_THROWS_WITH(backend::log_softmax(x, 5), Catch::Contains("log_softmax"));
  REQUIRE_THROWS_WITH(softmax(Tensor::scalar(1.0), 0), Catch::Contains("softmax"));
  REQUIRE_THROWS_WITH(backend::softmax(Tensor::zeros({3}, DType::I64), 0), Catch::Contains("softmax"));
  REQUIRE_THROWS_WITH(backend::log_softmax(Tensor::zeros({3}, DType::I32), 0), Catch::Contains("log_softmax"));
  Tensor y = backend::softmax(x, 1);
  REQUIRE_THROWS_WITH(backend::softmax_backward(test::rand({3, 2}, 1), y, 1),
                      Catch::Contains("softmax_backward"));
  REQUIRE_THROWS_WITH(backend::softmax_backward(y.to(DType::F64), y, 1), Catch::Contains("softmax_backward"));
  REQUIRE_THROWS_WITH(backend::log_softmax_backward(y, y, 3), Catch::Contains("log_softmax_backward"));
}
