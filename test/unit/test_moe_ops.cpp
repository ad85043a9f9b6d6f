// The MoE building blocks below the gate: dispatch/combine/replace_rows
// against naive loops, their gradients, the expert bank's per-expert names
// over stacked storage, and the batched expert FFN.
#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/moe/dispatch.h"
#include "strata/moe/experts.h"
#include "test_util.h"

using namespace strata;
using namespace strata::moe;

namespace {

// A random top-2 routing of n rows over V experts with capacity C (some drops).
Routing random_routing(int64_t n, int64_t V, int64_t C, uint64_t seed) {
  std::vector<double> logits = Tensor::uniform({n, V}, seed, 0, -2, 2, DType::F64).to_vector<double>();
  std::vector<double> probs(logits.size());
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t e = 0; e < V; ++e) s += std::exp(logits[size_t(i * V + e)]);
    for (int64_t e = 0; e < V; ++e) probs[size_t(i * V + e)] = std::exp(logits[size_t(i * V + e)]) / s;
  }
  RouteOptions ro;
  ro.policy = config::SecondExpertPolicy::Argmax;
  return route<double>(probs.data(), logits.data(), n, V, C, ro, nullptr);
}

std::shared_ptr<const SlotMap> map_of(const Routing& r) {
  return std::make_shared<const SlotMap>(make_slot_map(r, 0, r.experts, r.used_capacity()));
}

}  // namespace

TEST_CASE("dispatch copies each kept choice's row into its slot and leaves empty slots zero", "[moe]") {
  auto seed = GENERATE(1, 2, 3);
  const int64_t n = 13, V = 4, d = 7;
  Routing r = random_routing(n, V, 5, uint64_t(seed));
  auto m = map_of(r);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = test::rand({n, d}, uint64_t(seed) + 10, dt);
    SECTION(std::string("dtype ") + dtype_name(dt)) {
      for (bool nc : {false, true}) {
        Tensor xin = nc ? test::non_contiguous(x) : x;
        Tensor y = dispatch_rows(xin, m);
        REQUIRE(y.shape() == Shape{m->slots, d});
        std::vector<double> yv = y.to_vector<double>(), xv = x.to_vector<double>();
        for (int64_t s = 0; s < m->slots; ++s)
          for (int64_t c = 0; c < d; ++c) {
            const int64_t src = m->slot_src[size_t(s)];
            const double want = src < 0 ? 0.0 : xv[size_t((src / 2) * d + c)];
            REQUIRE(yv[size_t(s * d + c)] == want);
          }
      }
    }
  }
  REQUIRE_THROWS_WITH(dispatch_rows(test::rand({n + 1, d}, 1), m), Catch::Contains("moe dispatch"));
}

TEST_CASE("combine sums the weighted expert rows of each token's kept choices", "[moe]") {
  auto seed = GENERATE(4, 5);
  const int64_t n = 11, V = 3, d = 5;
  Routing r = random_routing(n, V, 4, uint64_t(seed));
  auto m = map_of(r);
  Tensor y = test::rand({m->slots, d}, uint64_t(seed) + 1, DType::F64);
  Tensor w = test::rand({n, 2}, uint64_t(seed) + 2, DType::F64);
  Tensor out = combine_rows(y, w, m);
  std::vector<double> yv = y.to_vector<double>(), wv = w.to_vector<double>(), ov = out.to_vector<double>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c) {
      double want = 0;
      for (int j = 0; j < 2; ++j) {
        const int64_t s = m->row_slot[size_t(i * 2 + j)];
        if (s >= 0) want += wv[size_t(i * 2 + j)] * yv[size_t(s * d + c)];
      }
      REQUIRE(ov[size_t(i * d + c)] == Approx(want).epsilon(1e-12));
    }
  REQUIRE_THROWS_WITH(combine_rows(y, test::rand({n, 2}, 1), m), Catch::Contains("dtype"));
  REQUIRE_THROWS_WITH(combine_rows(y, test::rand({n, 3}, 1, DType::F64), m), Catch::Contains("moe combine"));
}

TEST_CASE("dispatch and combine have exact gradients", "[moe]") {
  const int64_t n = 9, V = 3, d = 4;
  Routing r = random_routing(n, V, 4, 8);
  auto m = map_of(r);
  SECTION("dispatch") {
    for (bool nc : {false, true})
      test::require_gradcheck([&](const std::vector<Tensor>& in) { return dispatch_rows(in[0], m); },
                              {test::grad_input({n, d}, 3, nc)});
  }
  SECTION("combine, to the expert rows and the weights") {
    for (bool nc : {false, true})
      test::require_gradcheck([&](const std::vector<Tensor>& in) { return combine_rows(in[0], in[1], m); },
                              {test::grad_input({m->slots, d}, 4, nc), test::grad_input({n, 2}, 5, nc)});
  }
  SECTION("dispatch then combine") {
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) { return combine_rows(dispatch_rows(in[0], m) * 1.5, in[1], m); },
        {test::grad_input({n, d}, 6), test::grad_input({n, 2}, 7)});
  }
}

TEST_CASE("replace_rows writes rows into a copy and splits the gradient", "[moe]") {
  Tensor base = test::rand({6, 3}, 1, DType::F64);
  Tensor vals = test::rand({2, 3}, 2, DType::F64);
  Tensor out = replace_rows(base, {4, 1}, vals);
  std::vector<double> o = out.to_vector<double>(), b = base.to_vector<double>(), v = vals.to_vector<double>();
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t c = 0; c < 3; ++c) {
      double want = r == 4 ? v[size_t(c)] : r == 1 ? v[size_t(3 + c)] : b[size_t(r * 3 + c)];
      REQUIRE(o[size_t(r * 3 + c)] == want);
    }
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return replace_rows(in[0], {5, 0, 2}, in[1]); },
                          {test::grad_input({6, 3}, 3, true), test::grad_input({3, 3}, 4)});
  REQUIRE_THROWS_WITH(replace_rows(base, {1, 1}, vals), Catch::Contains("twice"));
  REQUIRE_THROWS_WITH(replace_rows(base, {1, 6}, vals), Catch::Contains("outside"));
  REQUIRE_THROWS_WITH(replace_rows(base, {1}, vals), Catch::Contains("moe replace_rows"));
}

TEST_CASE("the expert all-to-all on one process is an identity with an identity gradient", "[moe]") {
  dist::LocalCommunicator comm;
  Tensor x = test::grad_input({6, 4}, 9);
  Tensor y = all_to_all_rows(x, comm);
  test::require_close(y, x.detach());
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return all_to_all_rows(in[0] * 2.0, comm); },
                          {test::grad_input({4, 3}, 10, true)});
}

TEST_CASE("the expert bank names every expert by its global id over one stacked storage", "[moe]") {
  ExpertBank bank(4, 3, 5, 7);  // experts 4, 5, 6
  bank.init_parameters(11);
  auto named = bank.named_parameters();
  REQUIRE(named.size() == 12);
  CHECK(named[0].first == "4.fc1.weight");
  CHECK(named[1].first == "4.fc1.bias");
  CHECK(named[2].first == "4.fc2.weight");
  CHECK(named[3].first == "4.fc2.bias");
  CHECK(named[11].first == "6.fc2.bias");
  CHECK(named[0].second.shape() == Shape{7, 5});
  CHECK(named[2].second.shape() == Shape{5, 7});
  CHECK(bank.num_parameters() == 3 * (7 * 5 + 7 + 5 * 7 + 5));
  // the stacked view of experts 1..2 (local) shows the per-expert parameters
  ExpertWeights w = bank.range(1, 2);
  CHECK(w.fc1_weight.shape() == Shape{2, 7, 5});
  test::require_close(w.fc1_weight.detach().select(0, 1), named[8].second.detach());
  test::require_close(w.fc2_bias.detach().select(0, 0), named[7].second.detach());
  // init is per name: expert 5 of another bank that starts at 5 is identical
  ExpertBank other(5, 1, 5, 7);
  other.init_parameters(11);
  test::require_close(other.named_parameters()[0].second.detach(), named[4].second.detach());
  // uniform init bound 1/sqrt(fan_in)
  for (float v : named[0].second.detach().to_vector<float>()) REQUIRE(std::fabs(v) <= 1 / std::sqrt(5.0f));
  REQUIRE_THROWS_WITH(bank.range(2, 2), Catch::Contains("moe experts"));
}

TEST_CASE("gradients of the stacked expert weights reach each expert's own parameter", "[moe]") {
  ExpertBank bank(0, 3, 4, 6);
  bank.init_parameters(2);
  ExpertWeights w = bank.range(1, 2);
  Tensor loss = sum(w.fc1_weight * 2.0) + sum(square(w.fc2_bias));
  loss.backward();
  auto named = bank.named_parameters();
  CHECK(!named[0].second.grad().defined());  // expert 0 was not in the range
  test::require_close(named[4].second.grad(), Tensor::full({6, 4}, 2.0));
  test::require_close(named[11].second.grad(), named[11].second.detach() * 2.0);
  // writing a parameter (as the optimizer and checkpoint loading do) shows in the stacked view
  named[4].second.detach().fill_(0.5);
  CHECK(bank.range(1, 1).fc1_weight.detach().to_vector<float>()[0] == 0.5f);
}

TEST_CASE("the batched expert FFN equals each expert's FFN applied to its rows", "[moe]") {
  const int64_t V = 3, C = 5, d = 4, f = 6;
  Tensor x = test::rand({V, C, d}, 1, DType::F64);
  ExpertWeights w{test::rand({V, f, d}, 2, DType::F64), test::rand({V, f}, 3, DType::F64),
                  test::rand({V, d, f}, 4, DType::F64), test::rand({V, d}, 5, DType::F64)};
  nn::ForwardContext ctx;
  Tensor y = experts_forward(x, w, 0.0, 0.3, ctx);  // evaluation: dropout off
  for (int64_t v = 0; v < V; ++v) {
    Tensor h = relu(linear(x.select(0, v), w.fc1_weight.select(0, v), w.fc1_bias.select(0, v)));
    Tensor want = linear(h, w.fc2_weight.select(0, v), w.fc2_bias.select(0, v));
    test::require_close(y.select(0, v), want, 1e-12, 1e-12);
  }
  SECTION("gradients") {
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          return experts_forward(in[0], {in[1], in[2], in[3], in[4]}, 0.0, 0.0, ctx);
        },
        {test::grad_input({2, 3, 4}, 6), test::grad_input({2, 5, 4}, 7), test::grad_input({2, 5}, 8),
         test::grad_input({2, 4, 5}, 9), test::grad_input({2, 4}, 10)});
  }
  SECTION("dropout in training drops whole elements with inverted scaling") {
    Generator gen(3);
    nn::ForwardContext train{true, &gen, nullptr};
    Tensor yt = experts_forward(x, w, 0.0, 0.5, train);
    std::vector<double> a = yt.to_vector<double>(), b = y.to_vector<double>();
    int dropped = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      REQUIRE((a[i] == 0.0 || std::fabs(a[i] - 2 * b[i]) < 1e-12));
      dropped += a[i] == 0.0;
    }
    CHECK(dropped > 0);
    CHECK(dropped < int(a.size()));
  }
  REQUIRE_THROWS_WITH(experts_forward(test::rand({2, C, d}, 1, DType::F64), w, 0, 0, ctx),
                      Catch::Contains("moe experts"));
}
