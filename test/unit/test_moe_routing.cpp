// Gate math of the MoE layers on hand-worked examples (docs/smoe_spec.md 1.2):
// capacity, slot order, overflow, renormalisation, the balance loss, and the
// second-expert policies.
#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/moe/gate.h"
#include "strata/moe/routing.h"
#include "test_util.h"

using namespace strata;
using namespace strata::moe;
using config::SecondExpertPolicy;

namespace {

// Five rows whose logits are given directly (z = logits, wg = I): the example
// worked by hand in the test cases below. With V = 3 and capacity 2:
//   row  logits      e1  loc1        e2  loc2 (= count2 + colsum(mask1))
//   r0  [2, 1, 0]    0   0 kept      1   0 + 1 = 1 kept
//   r1  [2, 0, 1]    0   1 kept      2   0 + 0 = 0 kept
//   r2  [2, 1, 0]    0   2 DROPPED   1   1 + 1 = 2 DROPPED   -> no expert output
//   r3  [0, 2, -1]   1   0 kept      0   0 + 4 = 4 DROPPED   -> weight 1 on expert 1
//   r4  [2, 0, 1]    0   3 DROPPED   2   1 + 0 = 1 kept      -> weight 1 on expert 2
const std::vector<double> kLogits = {2, 1, 0, 2, 0, 1, 2, 1, 0, 0, 2, -1, 2, 0, 1};

Tensor example_z(DType dt = DType::F64) { return Tensor::from_vector(kLogits, {5, 3}).to(dt); }
Tensor identity3(DType dt = DType::F64) {
  return Tensor::from_vector(std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3}).to(dt);
}
std::vector<double> softmax_row(const std::vector<double>& l) {
  double m = *std::max_element(l.begin(), l.end()), s = 0;
  std::vector<double> p(l.size());
  for (size_t i = 0; i < l.size(); ++i) s += (p[i] = std::exp(l[i] - m));
  for (double& v : p) v /= s;
  return p;
}
GateOptions argmax_top2() {
  GateOptions o;
  o.policy = SecondExpertPolicy::Argmax;
  return o;
}

}  // namespace

TEST_CASE("expert capacity follows the reference's training and evaluation formulas", "[moe]") {
  CHECK(expert_capacity(10, 4, false, 1.0, true, 0.25) == 2 * 3);  // 2 * ceil(10/4)
  CHECK(expert_capacity(10, 4, true, 1.0, true, 0.25) == 3);       // Switch: ceil(10/4)
  CHECK(expert_capacity(8, 4, false, 1.0, true, 0.25) == 4);
  CHECK(expert_capacity(10, 4, false, 1.5, true, 0.25) == 9);      // ceil(1.5 * 2 * 3)
  CHECK(expert_capacity(10, 4, false, 1.0, false, 0.25) == 3);     // eval: ceil(0.25 * 10)
  CHECK(expert_capacity(10, 4, false, 1.0, false, 1.0) == 10);     // f = 1: no dropping possible
  CHECK(expert_capacity(10, 4, false, 1.0, false, 0.0) == 6);      // f <= 0: training capacity
  CHECK(expert_capacity(0, 4, false, 1.0, true, 0.25) == 0);
  CHECK(expert_capacity(7, 1, false, 1.0, true, 0.25) == 14);      // one visible expert
  REQUIRE_THROWS_WITH(expert_capacity(5, 0, false, 1.0, true, 0.25), Catch::Contains("moe capacity"));
}

TEST_CASE("top-2 routing gives first choices their slots before any second choice", "[moe]") {
  Tensor z = example_z();
  std::vector<double> probs;
  for (int r = 0; r < 5; ++r) {
    auto p = softmax_row({kLogits[size_t(3 * r)], kLogits[size_t(3 * r + 1)], kLogits[size_t(3 * r + 2)]});
    probs.insert(probs.end(), p.begin(), p.end());
  }
  RouteOptions ro;
  ro.policy = SecondExpertPolicy::Argmax;
  Routing r = route<double>(probs.data(), kLogits.data(), 5, 3, 2, ro, nullptr);
  CHECK(r.e1 == std::vector<int32_t>{0, 0, 0, 1, 0});
  CHECK(r.e2 == std::vector<int32_t>{1, 2, 1, 0, 2});
  CHECK(r.loc1 == std::vector<int64_t>{0, 1, 2, 0, 3});
  // expert 1: r3's first choice (row 3) sits before r0's second choice (row 0)
  CHECK(r.loc2 == std::vector<int64_t>{1, 0, 2, 4, 1});
  CHECK(r.keep1 == std::vector<uint8_t>{1, 1, 0, 1, 0});
  CHECK(r.keep2 == std::vector<uint8_t>{1, 1, 0, 0, 1});
  CHECK(r.first_count == std::vector<int64_t>{4, 1, 0});
  CHECK(r.used_capacity() == 2);

  SlotMap m = make_slot_map(r, 0, 3, 2);
  // slot = expert * 2 + loc; source = row * 2 + choice
  CHECK(m.slot_src == std::vector<int64_t>{0, 2, 6, 1, 3, 9});
  CHECK(m.row_slot == std::vector<int64_t>{0, 3, 1, 4, -1, -1, 2, -1, -1, 5});
  // the same routing in a buffer that starts 2 experts later (expert parallel layout)
  SlotMap m2 = make_slot_map(r, 2, 5, 2);
  CHECK(m2.slots == 10);
  CHECK(m2.row_slot[0] == 4);
  REQUIRE_THROWS_WITH(make_slot_map(r, 0, 3, 1), Catch::Contains("used capacity"));
  REQUIRE_THROWS_WITH(make_slot_map(r, 1, 3, 2), Catch::Contains("moe slot map"));
}

TEST_CASE("top-2 combine weights are renormalised over the kept choices after dropping", "[moe]") {
  GateOptions o = argmax_top2();
  GateOutput g = gate_forward(example_z(), identity3(), 5, 2, o, nullptr, nullptr);
  const double w = std::exp(2.0) / (std::exp(2.0) + std::exp(1.0));  // G_e1 / (G_e1 + G_e2) for rows 0, 1
  test::require_close(g.weights, {w, 1 - w, w, 1 - w, 0, 0, 1, 0, 0, 1}, 1e-12, 1e-12);
}

TEST_CASE("normalising before dropping keeps the dropped share out of the weights", "[moe]") {
  GateOptions o = argmax_top2();
  o.normalize_before_dropping = true;
  GateOutput g = gate_forward(example_z(), identity3(), 5, 2, o, nullptr, nullptr);
  const double w = std::exp(2.0) / (std::exp(2.0) + std::exp(1.0));
  // r3: p(e1=1) / (p(1) + p(0)) with logits 2 and 0; r4: p(e2=2)/(p(0)+p(2)) with logits 1 and 2
  const double w3 = std::exp(2.0) / (std::exp(2.0) + 1.0), w4 = std::exp(1.0) / (std::exp(2.0) + std::exp(1.0));
  test::require_close(g.weights, {w, 1 - w, w, 1 - w, 0, 0, w3, 0, 0, w4}, 1e-12, 1e-12);
}

TEST_CASE("a top-1 gate uses the raw probability and capacity ceil(S/V)", "[moe]") {
  GateOptions o;
  o.top1 = true;
  GateOutput g = gate_forward(example_z(), identity3(), 5, 2, o, nullptr, nullptr);
  const auto p0 = softmax_row({2, 1, 0}), p1 = softmax_row({2, 0, 1}), p3 = softmax_row({0, 2, -1});
  CHECK(g.routing.k == 1);
  CHECK(g.routing.e2 == std::vector<int32_t>(5, -1));
  test::require_close(g.weights, {p0[0], p1[0], 0, p3[1], 0}, 1e-12, 1e-12);
}

TEST_CASE("a one-expert stratum sends every token there with weight 1", "[moe]") {
  Tensor z = test::rand({6, 4}, 3, DType::F64);
  Tensor wg = test::rand({1, 4}, 4, DType::F64);
  const int64_t C = expert_capacity(6, 1, false, 1.0, true, 0.25);
  GateOutput g = gate_forward(z, wg, 6, C, GateOptions{}, nullptr, nullptr);  // Sampling needs no noise here
  CHECK(g.routing.e1 == std::vector<int32_t>(6, 0));
  CHECK(g.routing.e2 == std::vector<int32_t>(6, -1));
  test::require_close(g.weights, {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0}, 1e-12, 1e-12);
  // balance loss: V = 1, m = 1, c = 1 -> 1
  CHECK(g.balance.item() == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("the balance loss is V times sum of mean probability times first-choice share", "[moe]") {
  std::vector<std::vector<double>> p;
  for (int r = 0; r < 5; ++r) p.push_back(softmax_row({kLogits[size_t(3 * r)], kLogits[size_t(3 * r + 1)], kLogits[size_t(3 * r + 2)]}));
  const std::vector<double> c = {4, 1, 0};
  SECTION("no buffer padding") {
    GateOutput g = gate_forward(example_z(), identity3(), 5, 2, argmax_top2(), nullptr, nullptr);
    double want = 0;
    for (int e = 0; e < 3; ++e) {
      double m = 0;
      for (int r = 0; r < 5; ++r) m += p[size_t(r)][size_t(e)] / 5;
      want += m * c[size_t(e)] / 5;
    }
    CHECK(g.balance.item() == Approx(3 * want).epsilon(1e-12));
  }
  SECTION("two zero buffer rows count in the denominators with uniform probabilities") {
    GateOutput g = gate_forward(example_z(), identity3(), 7, 2, argmax_top2(), nullptr, nullptr);
    double want = 0;
    for (int e = 0; e < 3; ++e) {
      double m = 2.0 / 3.0;
      for (int r = 0; r < 5; ++r) m += p[size_t(r)][size_t(e)];
      want += (m / 7) * (c[size_t(e)] / 7);
    }
    CHECK(g.balance.item() == Approx(3 * want).epsilon(1e-12));
  }
  SECTION("ignoring padding leaves PAD rows and buffer rows out") {
    GateOptions o = argmax_top2();
    o.balance_ignore_padding = true;
    const uint8_t pad[5] = {0, 0, 1, 0, 1};  // rows 2 and 4 are PAD tokens
    GateOutput g = gate_forward(example_z(), identity3(), 7, 2, o, pad, nullptr);
    const std::vector<double> c2 = {2, 1, 0};
    double want = 0;
    for (int e = 0; e < 3; ++e) {
      double m = 0;
      for (int r : {0, 1, 3}) m += p[size_t(r)][size_t(e)];
      want += (m / 3) * (c2[size_t(e)] / 3);
    }
    CHECK(g.balance.item() == Approx(3 * want).epsilon(1e-12));
  }
}

TEST_CASE("the balance loss and combine weights have exact gradients", "[moe]") {
  auto wg = test::grad_input({3, 4}, 21);
  Tensor z = test::rand({9, 4}, 22, DType::F64, -2, 2);
  for (bool top1 : {false, true})
    for (bool before : {false, true}) {
      GateOptions o = argmax_top2();
      o.top1 = top1;
      o.normalize_before_dropping = before;
      o.z_loss = true;
      // capacity 3 forces drops among 9 rows
      test::require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            GateOutput g = gate_forward(z, in[0], 11, 3, o, nullptr, nullptr);
            return concat({reshape(g.weights, {-1}), reshape(g.balance, {1}), reshape(g.z_loss, {1})}, 0);
          },
          {wg});
    }
}

TEST_CASE("the router z-loss is the mean squared log-sum-exp of the logits", "[moe]") {
  GateOptions o = argmax_top2();
  o.z_loss = true;
  GateOutput g = gate_forward(example_z(), identity3(), 5, 2, o, nullptr, nullptr);
  double want = 0;
  for (int r = 0; r < 5; ++r) {
    double s = 0;
    for (int e = 0; e < 3; ++e) s += std::exp(kLogits[size_t(3 * r + e)]);
    want += std::log(s) * std::log(s) / 5;
  }
  CHECK(g.z_loss.item() == Approx(want).epsilon(1e-12));
}

TEST_CASE("Gumbel sampling draws the second expert from the softmax of the other logits", "[moe]") {
  const int64_t n = 20000, V = 4;
  // every row: logits [3, 0, ln 2, ln 1] -> e1 = 0; e2 ~ (1, 2, 1)/4 over experts 1..3
  std::vector<double> logits, probs;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> l = {3, 0, std::log(2.0), 0};
    auto p = softmax_row(l);
    logits.insert(logits.end(), l.begin(), l.end());
    probs.insert(probs.end(), p.begin(), p.end());
  }
  RouteOptions ro;  // Sampling
  PhiloxStream noise{7, 3};
  Routing r = route<double>(probs.data(), logits.data(), n, V, 2 * n, ro, &noise);
  std::vector<double> freq(4, 0);
  for (int32_t e : r.e2) freq[size_t(e)] += 1.0 / double(n);
  CHECK(freq[0] == 0.0);
  CHECK(freq[1] == Approx(0.25).margin(0.015));
  CHECK(freq[2] == Approx(0.5).margin(0.015));
  CHECK(freq[3] == Approx(0.25).margin(0.015));
  // the same stream draws the same choices; another stream different ones
  Routing again = route<double>(probs.data(), logits.data(), n, V, 2 * n, ro, &noise);
  CHECK(again.e2 == r.e2);
  PhiloxStream other{7, 4};
  CHECK(route<double>(probs.data(), logits.data(), n, V, 2 * n, ro, &other).e2 != r.e2);
  REQUIRE_THROWS_WITH(route<double>(probs.data(), logits.data(), n, V, 2 * n, ro, nullptr),
                      Catch::Contains("random stream"));
}

TEST_CASE("the random policy keeps the second expert with probability 2*g2", "[moe]") {
  const int64_t n = 20000;
  std::vector<double> l = {1.0, std::log(0.2 / 0.8 * std::exp(1.0)), -30};  // p ~ (0.8, 0.2, 0)
  std::vector<double> logits, probs;
  for (int64_t i = 0; i < n; ++i) {
    auto p = softmax_row(l);
    logits.insert(logits.end(), l.begin(), l.end());
    probs.insert(probs.end(), p.begin(), p.end());
  }
  RouteOptions ro;
  ro.policy = SecondExpertPolicy::Random;
  PhiloxStream noise{11, 0};
  Routing r = route<double>(probs.data(), logits.data(), n, 3, 2 * n, ro, &noise);
  double kept = 0;
  for (int32_t e : r.e2) {
    REQUIRE((e == 1 || e == -1));
    kept += e == 1 ? 1.0 / double(n) : 0.0;
  }
  CHECK(kept == Approx(0.4).margin(0.015));
  // normalised before dropping: g2 = 0.2 / (0.8 + 0.2) is the same here; with a third expert taking mass it differs
  ro.normalize_before_dropping = true;
  Routing r2 = route<double>(probs.data(), logits.data(), n, 3, 2 * n, ro, &noise);
  CHECK(r2.e2 == r.e2);
}

TEST_CASE("gates run in f32 for f32 inputs and route the same as in f64", "[moe]") {
  GateOutput g32 = gate_forward(example_z(DType::F32), identity3(DType::F32), 5, 2, argmax_top2(), nullptr, nullptr);
  GateOutput g64 = gate_forward(example_z(), identity3(), 5, 2, argmax_top2(), nullptr, nullptr);
  CHECK(g32.weights.dtype() == DType::F32);
  CHECK(g32.routing.e1 == g64.routing.e1);
  CHECK(g32.routing.loc2 == g64.routing.loc2);
  test::require_close(g32.weights.to(DType::F64), g64.weights, 1e-6, 1e-6);
  REQUIRE_THROWS_WITH(gate_forward(example_z(), test::rand({3, 4}, 1, DType::F64), 5, 2, argmax_top2(), nullptr, nullptr),
                      Catch::Contains("moe gate"));
}
