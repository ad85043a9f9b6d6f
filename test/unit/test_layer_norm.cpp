#include <cmath>

#include "strata/autograd/node.h"
#include "strata/autograd/ops_nn.h"
#include "strata/backend/layer_norm.h"
#include "test_util.h"

using namespace strata;

namespace {

struct RefForward {
  Tensor y, mean, rstd;
};

// Row statistics and the normalised output in double with plain loops.
RefForward reference_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t D = x.shape().back(), rows = x.numel() / D;
  std::vector<double> v = x.to_vector<double>(), y(v.size());
  std::vector<double> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  std::vector<double> g = gamma.defined() ? gamma.to_vector<double>() : std::vector<double>(size_t(D), 1.0);
  std::vector<double> b = beta.defined() ? beta.to_vector<double>() : std::vector<double>(size_t(D), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, var = 0;
    for (int64_t i = 0; i < D; ++i) m += v[size_t(r * D + i)];
    m /= double(D);
    for (int64_t i = 0; i < D; ++i) var += (v[size_t(r * D + i)] - m) * (v[size_t(r * D + i)] - m);
    var /= double(D);
    const double rs = 1 / std::sqrt(var + eps);
    mean[size_t(r)] = m;
    rstd[size_t(r)] = rs;
    for (int64_t i = 0; i < D; ++i)
      y[size_t(r * D + i)] = (v[size_t(r * D + i)] - m) * rs * g[size_t(i)] + b[size_t(i)];
  }
  return {Tensor::from_vector(y, x.shape()).to(x.dtype()), Tensor::from_vector(mean, {rows}).to(x.dtype()),
          Tensor::from_vector(rstd, {rows}).to(x.dtype())};
}

// dx, dgamma, dbeta in double from the textbook formulas, row by row.
backend::LayerNormBackward reference_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps) {
  const int64_t D = x.shape().back(), rows = x.numel() / D;
  RefForward f = reference_forward(x.to(DType::F64), Tensor(), Tensor(), eps);
  std::vector<double> v = x.to_vector<double>(), gv = dy.to_vector<double>(), dx(v.size());
  std::vector<double> mean = f.mean.to_vector<double>(), rstd = f.rstd.to_vector<double>();
  std::vector<double> g = gamma.defined() ? gamma.to_vector<double>() : std::vector<double>(size_t(D), 1.0);
  std::vector<double> dg(size_t(D), 0.0), db(size_t(D), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < D; ++i) {
      const double xhat = (v[size_t(r * D + i)] - mean[size_t(r)]) * rstd[size_t(r)];
      const double dxhat = gv[size_t(r * D + i)] * g[size_t(i)];
      a += dxhat;
      b += dxhat * xhat;
      dg[size_t(i)] += gv[size_t(r * D + i)] * xhat;
      db[size_t(i)] += gv[size_t(r * D + i)];
    }
    for (int64_t i = 0; i < D; ++i) {
      const double xhat = (v[size_t(r * D + i)] - mean[size_t(r)]) * rstd[size_t(r)];
      const double dxhat = gv[size_t(r * D + i)] * g[size_t(i)];
      dx[size_t(r * D + i)] = rstd[size_t(r)] * (dxhat - a / double(D) - xhat * b / double(D));
    }
  }
  return {Tensor::from_vector(dx, x.shape()).to(x.dtype()), Tensor::from_vector(dg, {D}).to(x.dtype()),
          Tensor::from_vector(db, {D}).to(x.dtype())};
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{13}, {7, 13}, {3, 5, 8}, {2, 3, 4, 9}, {5, 1}, {40, 3}};
  return s;
}

}  // namespace

TEST_CASE("layer_norm forward matches a reference loop", "[layer_norm]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto affine = GENERATE(0, 1, 2, 3);  // bit 0: gamma, bit 1: beta
  for (const Shape& s : shapes()) {
    INFO("shape " << shape_str(s) << " affine " << affine);
    const int64_t D = s.back();
    Tensor x = test::rand(s, 1, dt, -2, 3);
    Tensor gamma = (affine & 1) ? test::rand({D}, 2, dt, 0.5, 1.5) : Tensor();
    Tensor beta = (affine & 2) ? test::rand({D}, 3, dt) : Tensor();
    backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, beta, 1e-5);
    RefForward r = reference_forward(x, gamma, beta, 1e-5);
    const double tol = dt == DType::F32 ? 2e-5 : 1e-12;
    test::require_close(f.y, r.y, tol, tol);
    test::require_close(f.mean, r.mean, tol, tol);
    test::require_close(f.rstd, r.rstd, tol, tol);
    CHECK(f.mean.dtype() == dt);
    CHECK(f.rstd.dtype() == dt);
    CHECK(f.mean.shape() == Shape{x.numel() / D});
  }
}

TEST_CASE("layer_norm of non-contiguous inputs matches the contiguous result", "[layer_norm]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 8}, Shape{11}}) {
    const int64_t D = s.back();
    Tensor x = test::rand(s, 4, dt, -2, 2);
    Tensor gamma = test::rand({D}, 5, dt, 0.5, 1.5), beta = test::rand({D}, 6, dt);
    Tensor xn = test::non_contiguous(x), gn = test::non_contiguous(gamma), bn = test::non_contiguous(beta);
    REQUIRE_FALSE(xn.is_contiguous());
    REQUIRE_FALSE(gn.is_contiguous());
    backend::LayerNormForward a = backend::layer_norm_forward(xn, gn, bn, 1e-5);
    backend::LayerNormForward b = backend::layer_norm_forward(x, gamma, beta, 1e-5);
    test::require_close(a.y, b.y);
    test::require_close(a.mean, b.mean);
    test::require_close(a.rstd, b.rstd);
    Tensor dy = test::rand(s, 7, dt);
    backend::LayerNormBackward ga = backend::layer_norm_backward(test::non_contiguous(dy), xn, gn, a);
    backend::LayerNormBackward gb = backend::layer_norm_backward(dy, x, gamma, b);
    test::require_close(ga.dx, gb.dx);
    test::require_close(ga.dgamma, gb.dgamma);
    test::require_close(ga.dbeta, gb.dbeta);
  }
}

TEST_CASE("layer_norm output rows have zero mean and unit variance", "[layer_norm]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  Tensor x = test::rand({9, 64}, 8, dt, -5, 20);
  std::vector<double> y = backend::layer_norm_forward(x, Tensor(), Tensor(), 0.0).y.to_vector<double>();
  for (int64_t r = 0; r < 9; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < 64; ++i) m += y[size_t(r * 64 + i)];
    m /= 64;
    for (int64_t i = 0; i < 64; ++i) v += (y[size_t(r * 64 + i)] - m) * (y[size_t(r * 64 + i)] - m);
    v /= 64;
    CHECK(std::fabs(m) < (dt == DType::F32 ? 1e-6 : 1e-14));
    CHECK(v == Approx(1.0).epsilon(dt == DType::F32 ? 1e-5 : 1e-12));
  }
}

TEST_CASE("layer_norm statistics stay accurate when the mean dwarfs the spread", "[layer_norm]") {
  // f32 rows around 1e4 with spread ~1e-1: a one-pass E[x^2] - E[x]^2 in f32
  // cancels catastrophically; the double two-pass statistics must not.
  std::vector<float> v(4 * 256);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 1e4f + 0.1f * float(std::sin(double(i) * 0.7));
  Tensor x = Tensor::from_vector(v, {4, 256});
  backend::LayerNormForward f = backend::layer_norm_forward(x, Tensor(), Tensor(), 1e-12);
  RefForward r = reference_forward(x, Tensor(), Tensor(), 1e-12);
  test::require_close(f.rstd, r.rstd, 1e-5, 0);
  test::require_close(f.mean, r.mean, 1e-7, 0);
  test::require_close(f.y, r.y, 1e-5, 1e-5);
}

TEST_CASE("layer_norm of an input without rows gives empty outputs and zero parameter gradients",
          "[layer_norm]") {
  Tensor x = Tensor::zeros({0, 4}, DType::F64), gamma = Tensor::ones({4}, DType::F64);
  backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, Tensor(), 1e-5);
  CHECK(f.y.shape() == Shape{0, 4});
  CHECK(f.mean.shape() == Shape{0});
  backend::LayerNormBackward b = backend::layer_norm_backward(x, x, gamma, f);
  CHECK(b.dx.shape() == Shape{0, 4});
  test::require_close(b.dgamma, std::vector<double>(4, 0.0), 0, 0);
  test::require_close(b.dbeta, std::vector<double>(4, 0.0), 0, 0);
}

TEST_CASE("layer_norm of a constant row gives beta", "[layer_norm]") {
  Tensor x = Tensor::full({3, 5}, 2.5, DType::F64);
  Tensor gamma = test::rand({5}, 9, DType::F64), beta = test::rand({5}, 10, DType::F64);
  backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, beta, 1e-5);
  test::require_close(f.y, beta.unsqueeze(0).expand({3, 5}).contiguous());
  test::require_close(f.rstd, std::vector<double>(3, 1 / std::sqrt(1e-5)));
}

TEST_CASE("layer_norm backward matches the reference formulas", "[layer_norm]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  auto with_gamma = GENERATE(false, true);
  for (const Shape& s : shapes()) {
    INFO("shape " << shape_str(s) << " gamma " << with_gamma);
    const int64_t D = s.back();
    Tensor x = test::rand(s, 11, dt, -2, 2);
    Tensor gamma = with_gamma ? test::rand({D}, 12, dt, 0.5, 1.5) : Tensor();
    Tensor dy = test::rand(s, 13, dt);
    backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, Tensor(), 1e-5);
    backend::LayerNormBackward b = backend::layer_norm_backward(dy, x, gamma, f);
    backend::LayerNormBackward r = reference_backward(dy, x, gamma, 1e-5);
    const double tol = dt == DType::F32 ? 1e-4 : 1e-11;
    test::require_close(b.dx, r.dx, tol, tol);
    test::require_close(b.dgamma, r.dgamma, tol, tol);
    test::require_close(b.dbeta, r.dbeta, tol, tol);
    CHECK(b.dgamma.shape() == Shape{D});
    CHECK(b.dbeta.shape() == Shape{D});
  }
}

TEST_CASE("layer_norm parameter gradients sum over many rows in any block split", "[layer_norm]") {
  // More rows than partial-sum blocks, not a multiple of the block count.
  auto rows = GENERATE(1, 31, 33, 1001);
  Tensor x = test::rand({rows, 6}, 14, DType::F64, -3, 3);
  Tensor gamma = test::rand({6}, 15, DType::F64, 0.5, 1.5);
  Tensor dy = test::rand({rows, 6}, 16, DType::F64);
  backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, Tensor(), 1e-5);
  backend::LayerNormBackward b = backend::layer_norm_backward(dy, x, gamma, f);
  backend::LayerNormBackward r = reference_backward(dy, x, gamma, 1e-5);
  test::require_close(b.dgamma, r.dgamma, 1e-11, 1e-11);
  test::require_close(b.dbeta, r.dbeta, 1e-11, 1e-11);
  test::require_close(b.dx, r.dx, 1e-11, 1e-11);
}

TEST_CASE("layer_norm backward on a large input (threaded path) matches the reference", "[layer_norm]") {
  Tensor x = test::rand({300, 257}, 17, DType::F32, -2, 2);
  Tensor gamma = test::rand({257}, 18, DType::F32, 0.5, 1.5), beta = test::rand({257}, 19, DType::F32);
  Tensor dy = test::rand({300, 257}, 20, DType::F32);
  backend::LayerNormForward f = backend::layer_norm_forward(x, gamma, beta, 1e-5);
  test::require_close(f.y, reference_forward(x, gamma, beta, 1e-5).y, 2e-5, 2e-5);
  backend::LayerNormBackward b = backend::layer_norm_backward(dy, x, gamma, f);
  backend::LayerNormBackward r = reference_backward(dy, x, gamma, 1e-5);
  test::require_close(b.dx, r.dx, 1e-4, 1e-4);
  test::require_close(b.dgamma, r.dgamma, 1e-4, 1e-4);
  test::require_close(b.dbeta, r.dbeta, 1e-4, 1e-4);
}

TEST_CASE("layer_norm backward accepts a broadcast (stride 0) gradient", "[layer_norm]") {
  Tensor x = test::rand({4, 7}, 21, DType::F64);
  Tensor dy = Tensor::from_vector<double>({1, -2, 0.5, 3, 0, 1, -1}, {7}).expand({4, 7});
  backend::LayerNormForward f = backend::layer_norm_forward(x, Tensor(), Tensor(), 1e-5);
  backend::LayerNormBackward b = backend::layer_norm_backward(dy, x, Tensor(), f);
  backend::LayerNormBackward r = reference_backward(dy.contiguous(), x, Tensor(), 1e-5);
  test::require_close(b.dx, r.dx);
  test::require_close(b.dbeta, r.dbeta);
}

TEST_CASE("layer_norm passes gradcheck with respect to x, gamma and beta", "[layer_norm]") {
  auto noncontig = GENERATE(false, true);
  for (const Shape& s : {Shape{6}, Shape{3, 5}, Shape{2, 3, 4}}) {
    INFO("shape " << shape_str(s) << " noncontig " << noncontig);
    const int64_t D = s.back();
    test::require_gradcheck(
        [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
        {test::grad_input(s, 22, noncontig, -2, 2), test::grad_input({D}, 23, noncontig, 0.5, 1.5),
         test::grad_input({D}, 24, noncontig)});
  }
}

TEST_CASE("layer_norm passes gradcheck without affine parameters or with gamma only", "[layer_norm]") {
  auto noncontig = GENERATE(false, true);
  test::require_gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5); },
                          {test::grad_input({4, 6}, 25, noncontig, -2, 2)});
  test::require_gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor(), 1e-5); },
                          {test::grad_input({4, 6}, 26, noncontig, -2, 2), test::grad_input({6}, 27, noncontig)});
  test::require_gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), in[1], 1e-5); },
                          {test::grad_input({4, 6}, 28, noncontig, -2, 2), test::grad_input({6}, 29, noncontig)});
}

TEST_CASE("layer_norm gives gradients only to the inputs that take part", "[layer_norm]") {
  Tensor x = test::rand({3, 4}, 30, DType::F64);
  Tensor gamma = test::rand({4}, 31, DType::F64, 0.5, 1.5).set_requires_grad(true);
  Tensor y = layer_norm(x, gamma, Tensor(), 1e-5);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->name()) == "layer_norm");
  Tensor dy = test::rand({3, 4}, 32, DType::F64);
  y.backward(dy);
  backend::LayerNormBackward r = reference_backward(dy, x, gamma.detach(), 1e-5);
  test::require_close(gamma.grad(), r.dgamma);
  CHECK_FALSE(x.grad().defined());
  // nothing to record when no input needs a gradient
  CHECK(layer_norm(x, Tensor(), Tensor(), 1e-5).grad_fn() == nullptr);
}

TEST_CASE("layer_norm rejects mismatched parameters, empty rows and bad eps", "[layer_norm]") {
  Tensor x = test::rand({3, 4}, 33);
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, test::rand({5}, 1), Tensor(), 1e-5),
                      Catch::Contains("layer_norm") && Catch::Contains("gamma"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, Tensor(), test::rand({3, 4}, 1), 1e-5),
                      Catch::Contains("layer_norm") && Catch::Contains("beta"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, test::rand({4}, 1, DType::F64), Tensor(), 1e-5),
                      Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(Tensor::scalar(1.0), Tensor(), Tensor(), 1e-5),
                      Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(Tensor::zeros({3, 0}), Tensor(), Tensor(), 1e-5),
                      Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(x, Tensor(), Tensor(), -1.0), Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(backend::layer_norm_forward(Tensor::zeros({3, 4}, DType::I32), Tensor(), Tensor(), 1e-5),
                      Catch::Contains("layer_norm"));
  REQUIRE_THROWS_WITH(layer_norm(x, test::rand({5}, 1), Tensor(), 1e-5), Catch::Contains("layer_norm"));
  backend::LayerNormForward f = backend::layer_norm_forward(x, Tensor(), Tensor(), 1e-5);
  REQUIRE_THROWS_WITH(backend::layer_norm_backward(test::rand({4, 3}, 1), x, Tensor(), f),
                      Catch::Contains("layer_norm_backward"));
  backend::LayerNormForward wrong = f;
  wrong.mean = Tensor::zeros({4});
  REQUIRE_THROWS_WITH(backend::layer_norm_backward(x, x, Tensor(), wrong), Catch::Contains("layer_norm_backward"));
}
