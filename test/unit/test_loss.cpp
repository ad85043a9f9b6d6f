#include <cmath>

#include "strata/autograd/ops_loss.h"
#include "test_util.h"

using namespace strata;

namespace {
// Naive reference: explicit log-softmax per row.
std::pair<double, double> reference_loss(const Tensor& logits, const std::vector<int64_t>& target, double a, double b,
                                         int64_t ignore) {
  std::vector<double> x = logits.to_vector<double>();
  const int64_t N = logits.size(0), V = logits.size(1);
  double loss = 0, nll = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (target[i] == ignore) continue;
    double mx = -1e300;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, x[i * V + v]);
    double se = 0;
    for (int64_t v = 0; v < V; ++v) se += std::exp(x[i * V + v] - mx);
    double lse = mx + std::log(se);
    double smooth = 0;
    for (int64_t v = 0; v < V; ++v) smooth += lse - x[i * V + v];
    double n = lse - x[i * V + target[i]];
    loss += a * n + b * smooth;
    nll += n;
  }
  return {loss, nll};
}
}  // namespace

TEST_CASE("label-smoothed cross-entropy matches a naive log-softmax", "[loss]") {
  auto seed = GENERATE(1u, 2u, 3u);
  const int64_t N = 9, V = 13;
  Tensor logits = test::rand({N, V}, seed, DType::F64, -4, 4);
  std::vector<int64_t> tgt = {0, 12, 5, 1, 1, 7, 3, 1, 11};  // 1 = padding
  Tensor target = Tensor::from_vector(tgt, {N});
  const double eps = 0.1;
  SECTION("uniform smoothing (eps/V), the MoE criterion") {
    CrossEntropyResult r = label_smoothed_cross_entropy(logits, target, eps, 1, SmoothingForm::Moe);
    auto [loss, nll] = reference_loss(logits, tgt, 1 - eps, eps / V, 1);
    CHECK(r.tokens == 6);
    CHECK(r.loss.item() == Approx(loss).epsilon(1e-12));
    CHECK(r.nll.item() == Approx(nll).epsilon(1e-12));
  }
  SECTION("fairseq smoothing (eps/(V-1))") {
    CrossEntropyResult r = label_smoothed_cross_entropy(logits, target, eps, 1, SmoothingForm::Fairseq);
    double b = eps / (V - 1);
    auto [loss, nll] = reference_loss(logits, tgt, 1 - eps - b, b, 1);
    CHECK(r.loss.item() == Approx(loss).epsilon(1e-12));
  }
  SECTION("no smoothing is plain NLL") {
    CrossEntropyResult r = label_smoothed_cross_entropy(logits, target, 0.0, 1);
    CHECK(r.loss.item() == Approx(r.nll.item()).epsilon(1e-12));
  }
}

TEST_CASE("label-smoothed cross-entropy is stable for huge logits and f32", "[loss]") {
  Tensor logits = Tensor::from_vector<float>({1e4f, 0, -1e4f, 3e4f, 3e4f, 0}, {2, 3});
  Tensor target = Tensor::from_vector<int64_t>({0, 2}, {2});
  CrossEntropyResult r = label_smoothed_cross_entropy(logits, target, 0.0, -1);
  CHECK(std::isfinite(r.loss.item()));
  CHECK(r.loss.item() == Approx(3e4 + std::log(2.0)).epsilon(1e-6));
}

TEST_CASE("label-smoothed cross-entropy gradient passes gradcheck", "[loss]") {
  auto seed = GENERATE(4u, 5u);
  auto noncontig = GENERATE(false, true);
  Tensor target = Tensor::from_vector<int64_t>({2, 0, 6, 1, 4}, {5});
  test::require_gradcheck(
      [&](const std::vector<Tensor>& in) { return label_smoothed_cross_entropy(in[0], target, 0.1, 1).loss; },
      {test::grad_input({5, 7}, seed, noncontig, -3, 3)});
}

TEST_CASE("the gradient of a padding row is zero", "[loss]") {
  Tensor logits = test::rand({3, 4}, 7, DType::F64).set_requires_grad();
  Tensor target = Tensor::from_vector<int64_t>({1, 3, 1}, {3});
  label_smoothed_cross_entropy(logits, target, 0.1, 1).loss.backward();
  std::vector<double> g = logits.grad().to_vector<double>();
  for (int v = 0; v < 4; ++v) {
    CHECK(g[v] == 0.0);
    CHECK(g[8 + v] == 0.0);
  }
  double row_sum = g[4] + g[5] + g[6] + g[7];
  CHECK(row_sum == Approx(0.0).margin(1e-12));  // softmax gradient rows sum to zero
}

TEST_CASE("cross-entropy rejects bad targets and shapes", "[loss]") {
  Tensor logits = Tensor::zeros({2, 3});
  REQUIRE_THROWS_WITH(label_smoothed_cross_entropy(logits, Tensor::from_vector<int64_t>({0, 3}, {2}), 0.1, -1),
                      Catch::Contains("target 3 at row 1 outside the vocabulary of 3"));
  REQUIRE_THROWS_WITH(label_smoothed_cross_entropy(logits, Tensor::from_vector<int64_t>({0}, {1}), 0.1, -1),
                      Catch::Contains("does not match logits"));
  REQUIRE_THROWS_WITH(label_smoothed_cross_entropy(logits, Tensor::from_vector<int64_t>({0, 1}, {2}), 1.5, -1),
                      Catch::Contains("epsilon"));
}
