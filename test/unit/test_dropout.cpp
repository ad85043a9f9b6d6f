#include <cmath>

#include "strata/autograd/node.h"
#include "strata/autograd/ops_nn.h"
#include "strata/backend/dropout.h"
#include "test_util.h"

using namespace strata;

namespace {

// The mask by the contract, element by element from the stream.
std::vector<double> reference_mask(int64_t n, double p, const PhiloxStream& s) {
  std::vector<double> m(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) m[size_t(i)] = s.uniform(uint64_t(i)) >= float(p) ? 1.0 / (1.0 - p) : 0.0;
  return m;
}

double kept_fraction(const Tensor& mask) {
  int64_t kept = 0;
  for (double v : mask.to_vector<double>()) kept += v != 0.0;
  return double(kept) / double(mask.numel());
}

}  // namespace

TEST_CASE("dropout keeps element i iff stream.uniform(i) >= p", "[dropout]") {
  // Sizes around the 4-element Philox block, and one crossing the threaded grain.
  auto dt = GENERATE(DType::F32, DType::F64);
  const PhiloxStream stream{0x1234abcdULL, 7};
  for (int64_t n : {1, 2, 3, 4, 5, 7, 13, 1001, 40003}) {
    for (double p : {0.1, 0.5, 0.77}) {
      INFO("n " << n << " p " << p);
      Tensor m = backend::dropout_mask({n}, dt, p, stream);
      CHECK(m.dtype() == dt);
      test::require_close(m, reference_mask(n, p, stream), 0, 0);
    }
  }
}

TEST_CASE("dropout masks depend only on (seed, offset) and the element index", "[dropout]") {
  const PhiloxStream a{42, 3}, same{42, 3}, other_offset{42, 4}, other_seed{43, 3};
  Tensor m = backend::dropout_mask({37, 29}, DType::F32, 0.3, a);
  test::require_close(backend::dropout_mask({37, 29}, DType::F32, 0.3, same), m, 0, 0);
  // row-major element order: the same stream over a reshaped request gives the same elements
  test::require_close(backend::dropout_mask({29 * 37}, DType::F32, 0.3, a).view({37, 29}), m, 0, 0);
  // f32 and f64 masks drop the same elements
  test::require_close(backend::dropout_mask({37, 29}, DType::F64, 0.3, a).to(DType::F32), m, 0, 0);
  auto differs = [&](const Tensor& o) {
    std::vector<float> x = m.to_vector<float>(), y = o.to_vector<float>();
    int64_t diff = 0;
    for (size_t i = 0; i < x.size(); ++i) diff += x[i] != y[i];
    return diff;
  };
  // independent masks differ in about 2 p (1 - p) = 42% of the elements
  CHECK(differs(backend::dropout_mask({37, 29}, DType::F32, 0.3, other_offset)) > 300);
  CHECK(differs(backend::dropout_mask({37, 29}, DType::F32, 0.3, other_seed)) > 300);
}

TEST_CASE("dropout keeps a fraction 1 - p and preserves the expectation", "[dropout]") {
  auto p = GENERATE(0.05, 0.1, 0.5, 0.9);
  const int64_t n = 100000;
  Tensor m = backend::dropout_mask({n}, DType::F64, p, PhiloxStream{99, 1});
  // binomial standard deviation of the kept fraction, 5 sigma
  const double sigma = std::sqrt(p * (1 - p) / double(n));
  CHECK(std::fabs(kept_fraction(m) - (1 - p)) < 5 * sigma);
  double mean = 0;
  int64_t other_values = 0;  // neither dropped (0) nor kept (1/(1-p))
  for (double v : m.to_vector<double>()) {
    other_values += v != 0.0 && std::fabs(v - 1 / (1 - p)) > 1e-12;
    mean += v;
  }
  mean /= double(n);
  CHECK(other_values == 0);
  CHECK(std::fabs(mean - 1.0) < 5 * sigma / (1 - p));
}

TEST_CASE("dropout with p = 0 keeps everything and p = 1 drops everything", "[dropout]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  test::require_close(backend::dropout_mask({3, 5}, dt, 0.0, PhiloxStream{1, 2}), std::vector<double>(15, 1.0), 0, 0);
  Tensor z = backend::dropout_mask({3, 5}, dt, 1.0, PhiloxStream{1, 2});
  test::require_close(z, std::vector<double>(15, 0.0), 0, 0);  // zeros, no inf or NaN from 1/(1-p)
  CHECK(backend::dropout_mask({0, 4}, dt, 0.5, PhiloxStream{1, 2}).numel() == 0);
}

TEST_CASE("dropout rejects p outside [0, 1] and non-floating dtypes", "[dropout]") {
  const PhiloxStream s{1, 0};
  REQUIRE_THROWS_WITH(backend::dropout_mask({4}, DType::F32, -0.1, s),
                      Catch::Contains("dropout") && Catch::Contains("-0.1"));
  REQUIRE_THROWS_WITH(backend::dropout_mask({4}, DType::F32, 1.5, s), Catch::Contains("dropout"));
  REQUIRE_THROWS_WITH(backend::dropout_mask({4}, DType::F32, std::nan(""), s), Catch::Contains("dropout"));
  REQUIRE_THROWS_WITH(backend::dropout_mask({4}, DType::I64, 0.5, s), Catch::Contains("dropout"));
  Tensor x = test::rand({4}, 1);
  // checked even when dropout is inactive, so a bad config fails in evaluation too
  REQUIRE_THROWS_WITH(dropout(x, 2.0, s, false), Catch::Contains("dropout"));
  REQUIRE_THROWS_WITH(dropout(Tensor::zeros({4}, DType::I32), 0.5, s, true), Catch::Contains("dropout"));
}

TEST_CASE("dropout is the identity when not training or when p = 0", "[dropout]") {
  Tensor x = test::rand({4, 6}, 2, DType::F64).set_requires_grad(true);
  const PhiloxStream s{5, 6};
  Tensor a = dropout(x, 0.5, s, false);
  Tensor b = dropout(x, 0.0, s, true);
  test::require_close(a, x.detach(), 0, 0);
  test::require_close(b, x.detach(), 0, 0);
}

TEST_CASE("dropout in training multiplies by the mask and routes the gradient through it", "[dropout]") {
  auto dt = GENERATE(DType::F32, DType::F64);
  Tensor x = test::rand({9, 11}, 3, dt).set_requires_grad(true);
  const PhiloxStream s{77, 12};
  Tensor y = dropout(x, 0.4, s, true);
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->name()) == "dropout");
  std::vector<double> mask = reference_mask(99, 0.4, s), xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) REQUIRE(yv[i] == Approx(xv[i] * mask[i]).epsilon(1e-6));
  Tensor g = test::rand({9, 11}, 4, dt);
  y.backward(g);
  std::vector<double> gv = g.to_vector<double>(), dx = x.grad().to_vector<double>();
  for (size_t i = 0; i < dx.size(); ++i) REQUIRE(dx[i] == Approx(gv[i] * mask[i]).epsilon(1e-6));
}

TEST_CASE("dropout passes gradcheck", "[dropout]") {
  auto noncontig = GENERATE(false, true);
  const PhiloxStream s{8, 9};
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return dropout(in[0], 0.3, s, true); },
                          {test::grad_input({5, 7}, 10, noncontig)});
}
