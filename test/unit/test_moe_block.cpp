// The MoE block (plain MoE, SMoE, EOM, CMR) against a naive per-token
// implementation, its gradients, and the stratified flow's invariants.
#include <nlohmann/json.hpp>
#include <numeric>

#include "test_moe_block.h"

using namespace strata;
using namespace strata::moe;
using test::Vec;

namespace {

dist::LocalCommunicator& comm() {
  static dist::LocalCommunicator c;
  return c;
}

Tensor run_block(const BlockSpec& spec, const std::vector<Tensor>& leaves, const Tensor& x, const nn::ForwardContext& ctx,
                 const Tensor& pad = Tensor()) {
  ExpertPlacement place = ExpertPlacement::of(spec.experts(), comm());
  return moe_block_forward(x, pad, spec, test::block_weights(spec, leaves), ctx, comm(), place);
}

void require_rows_close(const Tensor& got, const std::vector<Vec>& want, double tol) {
  auto rows = test::rows_of(got);
  REQUIRE(rows.size() == want.size());
  for (size_t t = 0; t < rows.size(); ++t)
    for (size_t c = 0; c < rows[t].size(); ++c) {
      INFO("token " << t << " component " << c);
      REQUIRE(rows[t][c] == Approx(want[t][c]).margin(tol).epsilon(tol));
    }
}

double max_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

struct Case {
  const char* name;
  std::vector<int> strata;
  double frac;
  void (*adjust)(BlockSpec&);
};

}  // namespace

TEST_CASE("the MoE block reproduces a naive per-token implementation of the reference", "[moe]") {
  const Case cases[] = {
      {"plain top-2 MoE without hmoe LNs", {4}, 1.0, [](BlockSpec& s) { s.hmoe_layernorm = false; }},
      {"top-2 MoE with the hmoe LN (one stratum)", {4}, 1.0, [](BlockSpec&) {}},
      {"top-2 with capacity drops", {4}, 0.3, [](BlockSpec&) {}},
      {"SMoE 2-2", {2, 2}, 1.0, [](BlockSpec&) {}},
      {"SMoE 1-2-1 with drops", {1, 2, 1}, 0.4, [](BlockSpec&) {}},
      {"SMoE 2-2 with the paper's residual", {2, 2}, 0.5, [](BlockSpec& s) { s.residual = config::SmoeResidual::Paper; }},
      {"SMoE 2-2 without hmoe LNs", {2, 2}, 0.5, [](BlockSpec& s) { s.hmoe_layernorm = false; }},
      {"SMoE 3-1 with top-1 gates", {3, 1}, 0.5, [](BlockSpec& s) { s.gate.top1 = true; }},
      {"SMoE 2-1-1 normalising before dropping", {2, 1, 1}, 0.3,
       [](BlockSpec& s) { s.gate.normalize_before_dropping = true; }},
      {"EOM in evaluation", {2, 2}, 0.5, [](BlockSpec& s) { s.eom_rate = 0.1; }},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      auto seed = GENERATE(1, 2);
      BlockSpec spec = test::small_spec(c.strata);
      spec.gate.eval_capacity_fraction = c.frac;
      c.adjust(spec);
      auto leaves = test::block_leaves(spec, uint64_t(seed) * 100);
      Tensor x = test::rand({3, 5, spec.dim}, uint64_t(seed) + 7, DType::F64, -2, 2);
      nn::AuxLosses aux;
      aux.record_paths = true;
      nn::ForwardContext ctx{false, nullptr, &aux};
      Tensor y = run_block(spec, leaves, x, ctx);
      std::vector<std::vector<std::pair<int, int>>> paths;
      auto want = test::NaiveBlock(spec, leaves).forward(test::rows_of(x), c.frac, &paths);
      require_rows_close(y, want, 1e-10);
      REQUIRE(aux.blocks.size() == 1);
      for (size_t t = 0; t < paths.size(); ++t) {
        REQUIRE(aux.blocks[0].paths[t].size() == paths[t].size());
        for (size_t k = 0; k < paths[t].size(); ++k) {
          CHECK(aux.blocks[0].paths[t][k].first == paths[t][k].first);
          CHECK(aux.blocks[0].paths[t][k].second == paths[t][k].second);
        }
      }
    }
  }
}

TEST_CASE("gradients flow exactly through gates, experts, combine and the strata", "[moe]") {
  struct G {
    const char* name;
    std::vector<int> strata;
    double frac;
    bool training;
  } cases[] = {{"top-2 MoE with drops (evaluation capacity)", {3}, 0.4, false},
               {"SMoE 2-2 with drops", {2, 2}, 0.4, false},
               {"SMoE 1-2-1, training capacity, Gumbel second expert", {1, 2, 1}, 1.0, true}};
  for (const G& c : cases) {
    SECTION(c.name) {
      BlockSpec spec = test::small_spec(c.strata, 4, 5);
      spec.gate.eval_capacity_fraction = c.frac;
      if (c.training) spec.gate.policy = config::SecondExpertPolicy::Sampling;
      auto leaves = test::block_leaves(spec, 5);
      leaves.push_back(test::grad_input({2, 4, 4}, 77, true, -2, 2));  // x, non-contiguous
      test::require_gradcheck(
          [&](const std::vector<Tensor>& in) {
            Generator gen(9);  // the same Gumbel noise in every evaluation
            nn::AuxLosses aux;
            nn::ForwardContext ctx{c.training, c.training ? &gen : nullptr, &aux};
            std::vector<Tensor> w(in.begin(), in.end() - 1);
            Tensor y = run_block(spec, w, in.back(), ctx);
            return concat({reshape(y, {-1}), reshape(aux.blocks[0].balance, {1})}, 0);
          },
          leaves);
    }
  }
}

TEST_CASE("every token passes 1..L strata in increasing order, as its top-1 expert says", "[moe]") {
  BlockSpec spec = test::small_spec({2, 2, 2, 2}, 8, 8);
  spec.gate.policy = config::SecondExpertPolicy::Sampling;
  auto leaves = test::block_leaves(spec, 3);
  Tensor x = test::rand({4, 16, 8}, 4, DType::F64, -2, 2);
  Generator gen(1);
  nn::AuxLosses aux;
  aux.record_paths = true;
  nn::ForwardContext ctx{true, &gen, &aux};
  run_block(spec, leaves, x, ctx);
  const auto& b = aux.blocks.at(0);
  std::vector<int> lengths(5, 0);
  for (const auto& path : b.paths) {
    REQUIRE(!path.empty());
    REQUIRE(path.size() <= 4);
    CHECK(path.front().first == 0);
    for (size_t k = 0; k < path.size(); ++k) {
      const int s = path[k].first, e = path[k].second;
      CHECK(e >= spec.stratum_offset(s));  // a gate never picks an earlier stratum's expert
      if (k + 1 < path.size()) CHECK(path[k + 1].first == spec.stratum_of(e) + 1);
      else CHECK(spec.stratum_of(e) == 3);  // finished: its last top-1 expert is in the last stratum
    }
    ++lengths[path.size()];
  }
  CHECK(b.passes >= 1);
  CHECK(b.passes <= 4);
  // random weights spread tokens over several path lengths
  CHECK(lengths[1] + lengths[2] + lengths[3] + lengths[4] == 64);
  CHECK(std::count_if(lengths.begin(), lengths.end(), [](int n) { return n > 0; }) >= 2);
}

TEST_CASE("padding tokens do not change the MoE output of real tokens when nothing is dropped", "[moe]") {
  BlockSpec spec = test::small_spec({2, 1, 2});
  auto leaves = test::block_leaves(spec, 8);
  Tensor a = test::rand({1, 5, spec.dim}, 1, DType::F64), b = test::rand({1, 3, spec.dim}, 2, DType::F64);
  // batch [2, 5]: sentence b padded with two rows of junk
  Tensor junk = test::rand({1, 2, spec.dim}, 3, DType::F64, -5, 5);
  Tensor batch = concat({a, concat({b, junk}, 1)}, 0);
  Tensor pad = Tensor::from_vector(std::vector<float>{0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 5});
  nn::ForwardContext ctx;
  Tensor yb = run_block(spec, leaves, batch, ctx, pad);
  Tensor ya = run_block(spec, leaves, a, ctx), yb1 = run_block(spec, leaves, b, ctx);
  test::require_close(yb.detach().narrow(0, 0, 1), ya.detach(), 1e-12, 1e-12);
  test::require_close(yb.detach().narrow(0, 1, 1).narrow(1, 0, 3), yb1.detach(), 1e-12, 1e-12);
}

TEST_CASE("one token per sentence (incremental decoding) gives each token's full-batch output", "[moe]") {
  BlockSpec spec = test::small_spec({2, 2});
  auto leaves = test::block_leaves(spec, 12);
  Tensor x = test::rand({3, 4, spec.dim}, 5, DType::F64);
  nn::ForwardContext ctx;
  Tensor full = run_block(spec, leaves, x, ctx);
  for (int64_t t = 0; t < 4; ++t) {
    Tensor step = run_block(spec, leaves, x.narrow(1, t, 1).contiguous(), ctx);
    REQUIRE(step.shape() == Shape{3, 1, spec.dim});
    test::require_close(step.detach(), full.detach().narrow(1, t, 1), 1e-12, 1e-12);
  }
}

TEST_CASE("an SMoE block with one stratum is top-2 MoE followed by its layer norm", "[moe]") {
  BlockSpec with = test::small_spec({4}), without = with;
  without.hmoe_layernorm = false;
  with.gate.eval_capacity_fraction = without.gate.eval_capacity_fraction = 0.5;
  auto leaves = test::block_leaves(with, 4);
  std::vector<Tensor> plain(leaves.begin(), leaves.begin() + 7);  // no hmoe LN leaves
  Tensor x = test::rand({2, 6, with.dim}, 6, DType::F64);
  nn::ForwardContext ctx;
  Tensor a = run_block(with, leaves, x, ctx);
  Tensor b = layer_norm(run_block(without, plain, x, ctx), leaves[7], leaves[8], with.layernorm_eps);
  test::require_close(a.detach(), b.detach(), 1e-12, 1e-12);
}

TEST_CASE("EOM scales expert outputs by 1-p in evaluation and masks whole outputs in training", "[moe]") {
  BlockSpec spec = test::small_spec({4});
  spec.hmoe_layernorm = false;
  auto leaves = test::block_leaves(spec, 14);
  Tensor x = test::rand({4, 8, spec.dim}, 7, DType::F64);
  BlockSpec eom = spec;
  eom.eom_rate = 0.25;
  SECTION("evaluation") {
    nn::ForwardContext ctx;
    Tensor plain = run_block(spec, leaves, x, ctx) - x, masked = run_block(eom, leaves, x, ctx) - x;
    test::require_close(masked.detach(), plain.detach() * 0.75, 1e-12, 1e-12);
  }
  SECTION("training (top-1: each token keeps its whole expert output or none, unscaled)") {
    spec.gate.top1 = eom.gate.top1 = true;
    spec.gate.capacity_factor = eom.gate.capacity_factor = 4.0;  // no capacity drops
    Generator g1(5), g2(5);
    nn::ForwardContext c1{true, &g1, nullptr}, c2{true, &g2, nullptr};
    auto plain = test::rows_of(run_block(spec, leaves, x, c1) - x);
    auto masked = test::rows_of(run_block(eom, leaves, x, c2) - x);
    int zeroed = 0;
    for (size_t t = 0; t < plain.size(); ++t) {
      bool zero = std::all_of(masked[t].begin(), masked[t].end(), [](double v) { return v == 0.0; });
      if (zero) {
        ++zeroed;
      } else {
        for (size_t c = 0; c < plain[t].size(); ++c) REQUIRE(masked[t][c] == Approx(plain[t][c]).epsilon(1e-12));
      }
    }
    CHECK(zeroed >= 2);   // ~8 of 32 expected
    CHECK(zeroed <= 16);
  }
}

TEST_CASE("EOM training masks are keyed by (pass row, global expert), not by the capacity", "[moe]") {
  SECTION("eom_keep: the same routing under two capacities gives the same keep flags") {
    const int64_t n = 40, V = 3, E = 5, off = 2;  // the stratum's experts are global 2..4
    Tensor probs = softmax(test::rand({n, V}, 31, DType::F64, -2, 2), 1);
    std::vector<double> pv = probs.to_vector<double>();
    const RouteOptions ro{false, config::SecondExpertPolicy::Argmax, false};
    Routing small = route<double>(pv.data(), pv.data(), n, V, 12, ro, nullptr);  // drops some choices
    Routing large = route<double>(pv.data(), pv.data(), n, V, 200, ro, nullptr);
    REQUIRE(small.e1 == large.e1);
    REQUIRE(small.e2 == large.e2);
    REQUIRE(small.keep1 != large.keep1);  // the buffers really differ
    const PhiloxStream st{77, 3};
    const double p = 0.4;
    std::vector<double> a = eom_keep(small, off, E, st, p), b = eom_keep(large, off, E, st, p);
    CHECK(a == b);
    int dropped = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < 2; ++j) {
        const int64_t e = j == 0 ? large.e1[size_t(i)] : large.e2[size_t(i)];
        REQUIRE(a[size_t(i * 2 + j)] == (st.bernoulli(uint64_t(i * E + off + e), float(p)) ? 0.0 : 1.0));
        dropped += a[size_t(i * 2 + j)] == 0.0;
      }
    CHECK(dropped > 10);  // ~32 of 80 expected
    CHECK(dropped < 60);
  }
  SECTION("the block: two capacity factors that drop nothing give the same training output") {
    BlockSpec spec = test::small_spec({2, 2});
    spec.eom_rate = 0.3;
    spec.gate.policy = config::SecondExpertPolicy::Sampling;
    auto leaves = test::block_leaves(spec, 14);
    Tensor x = test::rand({3, 6, spec.dim}, 8, DType::F64);
    auto train = [&](double factor, double eom) {
      BlockSpec sp = spec;
      sp.gate.capacity_factor = factor;
      sp.eom_rate = eom;
      Generator gen(21);
      nn::ForwardContext ctx{true, &gen, nullptr};
      Tensor y = run_block(sp, leaves, x, ctx).detach();
      CHECK(gen.next_offset() > 0);
      return y;
    };
    Tensor a = train(4.0, 0.3), b = train(9.0, 0.3);
    test::require_close(a, b, 0, 0);
    CHECK(max_diff(a, train(4.0, 0.0)) > 1e-3);  // the masks are in effect
  }
}

TEST_CASE("dropout inside experts is keyed by the token, not by its buffer slot", "[moe]") {
  SECTION("expert_dropout_mask: a row's mask depends on (stream, source row, global expert) only") {
    const int64_t F = 7, E = 6;
    const PhiloxStream s0{5, 11}, s1{9, 2};
    // layout A: [2 experts (global 1, 4), 3 slots]; layout B: [3 experts (4, 0, 1), 5 slots], rows moved around
    ExpertRowKeys a, b;
    a.experts = b.experts = E;
    a.global = {1, 4};
    a.row = {0, 3, -1, 2, 0, 5};
    a.act = {s0, s1, s0, s0, s1, s0};
    b.global = {4, 0, 1};
    b.row = {-1, 5, 0, 2, -1, /**/ 1, -1, -1, -1, -1, /**/ 3, -1, -1, -1, 0};
    b.act = {s0, s0, s1, s0, s0, s1, s0, s0, s0, s0, s1, s0, s0, s0, s0};
    const double p = 0.35;
    std::vector<double> ma = expert_dropout_mask(2, 3, F, DType::F64, p, a, a.act).to_vector<double>();
    std::vector<double> mb = expert_dropout_mask(3, 5, F, DType::F64, p, b, b.act).to_vector<double>();
    auto row = [&](const std::vector<double>& m, int64_t i) { return std::vector<double>(m.begin() + i * F, m.begin() + (i + 1) * F); };
    CHECK(row(ma, 0) == row(mb, 2 * 5 + 4));  // row 0 at expert 1, stream s0
    CHECK(row(ma, 1) == row(mb, 2 * 5 + 0));  // row 3 at expert 1, stream s1
    CHECK(row(ma, 3) == row(mb, 0 * 5 + 3));  // row 2 at expert 4, stream s0
    CHECK(row(ma, 4) == row(mb, 0 * 5 + 2));  // row 0 at expert 4, stream s1
    CHECK(row(ma, 5) == row(mb, 0 * 5 + 1));  // row 5 at expert 4, stream s0
    CHECK(row(ma, 2) == std::vector<double>(size_t(F), 0.0));  // empty slots are masked out
    // the elements, and the inverted scaling of nn dropout
    for (int64_t f = 0; f < F; ++f) {
      const bool drop = s1.bernoulli(uint64_t((3 * E + 1) * F + f), float(p));
      CHECK(ma[size_t(1 * F + f)] == (drop ? 0.0 : 1.0 / (1.0 - p)));
    }
    // other (row, expert, stream) keys give other masks
    CHECK(row(ma, 0) != row(ma, 4));
    CHECK(row(ma, 1) != row(mb, 2 * 5 + 3));
    SECTION("forward and backward multiply by the saved mask") {
      Tensor x = test::rand({2, 3, F}, 4, DType::F64).set_requires_grad(true);
      Tensor y = expert_dropout(x, p, a, a.act);
      Tensor m = Tensor::from_vector(ma, {2, 3, F});
      test::require_close(y.detach(), x.detach() * m, 0, 0);
      Tensor g = test::rand({2, 3, F}, 5, DType::F64);
      y.backward(g);
      test::require_close(x.grad(), g * m, 0, 0);
    }
  }
  SECTION("the block: a token's training output does not depend on the other tokens' slots") {
    // Appending a sentence moves the slots of the first sentences' second choices (they queue
    // behind every first choice) but not their pass rows: with nothing dropped and the same
    // streams their outputs must not change.
    for (std::vector<int> strata : {std::vector<int>{4}, std::vector<int>{2, 2}}) {
      BlockSpec spec = test::small_spec(strata);
      spec.dropout = 0.3;
      spec.activation_dropout = 0.2;
      spec.eom_rate = 0.2;
      spec.gate.capacity_factor = 16.0;
      auto leaves = test::block_leaves(spec, 19);
      Tensor x = test::rand({2, 5, spec.dim}, 9, DType::F64);
      Tensor more = concat({x, test::rand({2, 5, spec.dim}, 10, DType::F64)}, 0);
      auto train = [&](const BlockSpec& sp, const Tensor& in) {
        Generator gen(33);
        nn::ForwardContext ctx{true, &gen, nullptr};
        return run_block(sp, leaves, in, ctx).detach();
      };
      Tensor a = train(spec, x), b = train(spec, more).narrow(0, 0, 2);
      test::require_close(a, b, 1e-12, 1e-12);
      BlockSpec off = spec;
      off.dropout = off.activation_dropout = 0;
      CHECK(max_diff(a, train(off, x)) > 1e-3);  // the dropout is in effect
    }
  }
  SECTION("gradients through EOM and the row-keyed dropouts") {
    BlockSpec spec = test::small_spec({2, 2}, 4, 5);
    spec.dropout = 0.3;
    spec.activation_dropout = 0.2;
    spec.eom_rate = 0.2;
    spec.gate.capacity_factor = 1.0;  // with drops
    spec.gate.policy = config::SecondExpertPolicy::Sampling;
    auto leaves = test::block_leaves(spec, 5);
    leaves.push_back(test::grad_input({2, 4, 4}, 78, true, -2, 2));
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          Generator gen(9);  // the same masks in every evaluation
          nn::ForwardContext ctx{true, &gen, nullptr};
          std::vector<Tensor> w(in.begin(), in.end() - 1);
          return reshape(run_block(spec, w, in.back(), ctx), {-1});
        },
        leaves);
  }
}

TEST_CASE("CMR mixes the shared FFN and the MoE with a sigmoid gate and records its loss terms", "[moe]") {
  BlockSpec spec = test::small_spec({4});
  spec.cmr = true;
  spec.cmr_gate_dropout = 0.1;
  auto leaves = test::block_leaves(spec, 21);
  REQUIRE(leaves.size() == 7 + 6);  // no hmoe LNs on the CMR path
  Tensor x = test::rand({2, 5, spec.dim}, 8, DType::F64);
  nn::AuxLosses aux;
  nn::ForwardContext ctx{false, nullptr, &aux};
  Tensor y = run_block(spec, leaves, x, ctx);
  // by hand: z = LN(u); c = sigmoid(w.z + b); u + (1-c) FFN(z) + c MoE(z)
  BlockSpec plain = spec;
  plain.cmr = false;
  plain.hmoe_layernorm = false;
  std::vector<Tensor> moe_leaves(leaves.begin(), leaves.begin() + 7);
  Tensor u = reshape(x, {10, spec.dim});
  Tensor moe = reshape(run_block(plain, moe_leaves, x, ctx), {10, spec.dim}) - u;
  Tensor z = layer_norm(u, leaves[0], leaves[1], spec.layernorm_eps);
  Tensor c = sigmoid(linear(z, leaves[7], leaves[8]));
  Tensor ffn = linear(relu(linear(z, leaves[9], leaves[10])), leaves[11], leaves[12]);
  Tensor want = u + ffn * (1.0 - c) + moe * c;
  test::require_close(reshape(y, {10, spec.dim}).detach(), want.detach(), 1e-12, 1e-12);
  REQUIRE(aux.blocks.size() == 2);
  CHECK(aux.blocks[0].cmr_tokens == 10);
  CHECK(aux.blocks[0].cmr_gate_sum.item() == Approx(sum(c).item()).epsilon(1e-12));
  CHECK(!aux.blocks[1].cmr_gate_sum.defined());
  SECTION("gradients") {
    leaves.push_back(test::grad_input({2, 3, spec.dim}, 99));
    test::require_gradcheck(
        [&](const std::vector<Tensor>& in) {
          nn::AuxLosses a;
          nn::ForwardContext cx{false, nullptr, &a};
          std::vector<Tensor> w(in.begin(), in.end() - 1);
          Tensor out = run_block(spec, w, in.back(), cx);
          return concat({reshape(out, {-1}), reshape(a.blocks[0].cmr_gate_sum, {1})}, 0);
        },
        leaves);
  }
  SECTION("training: the gate value gets inverted dropout") {
    Generator gen(2);
    nn::AuxLosses a;
    nn::ForwardContext cx{true, &gen, &a};
    Tensor big = test::rand({8, 16, spec.dim}, 9, DType::F64);
    run_block(spec, leaves, big, cx);
    // with p = 0.1 some gates are zeroed and the rest scaled by 1/0.9, so the sum moves
    nn::AuxLosses e;
    nn::ForwardContext ce{false, nullptr, &e};
    run_block(spec, leaves, big, ce);
    CHECK(a.blocks[0].cmr_gate_sum.item() != Approx(e.blocks[0].cmr_gate_sum.item()).epsilon(1e-6));
  }
  SECTION("more than one stratum is rejected") {
    BlockSpec bad = test::small_spec({2, 2});
    bad.cmr = true;
    REQUIRE_THROWS_WITH(MoEBlock(bad, comm()), Catch::Contains("cmr"));
    BlockSpec two = bad;
    two.cmr = false;
    BlockWeights w = test::block_weights(two, test::block_leaves(two, 1));
    REQUIRE_THROWS_WITH(moe_block_forward(x, Tensor(), bad, w, ctx, comm(), ExpertPlacement::of(4, comm())),
                        Catch::Contains("cmr"));
  }
}

TEST_CASE("the block's balance loss is the mean of its passes' losses", "[moe]") {
  // No hmoe LNs, so the second pass gates the raw h = u + y0 of its tokens.
  BlockSpec spec = test::small_spec({2, 2}), one = test::small_spec({4});
  spec.hmoe_layernorm = one.hmoe_layernorm = false;
  auto leaves = test::block_leaves(spec, 31);
  std::vector<Tensor> one_leaves = {leaves[0], leaves[1], leaves[2], leaves[4], leaves[5], leaves[6], leaves[7]};
  Tensor x = test::rand({2, 7, spec.dim}, 3, DType::F64, -2, 2);
  nn::AuxLosses aux;
  aux.record_paths = true;
  nn::ForwardContext ctx{false, nullptr, &aux};
  run_block(spec, leaves, x, ctx);
  const auto& b = aux.blocks.at(0);
  // pass 0 is the one-stratum block's pass over all 14 tokens
  nn::AuxLosses aux0;
  nn::ForwardContext ctx0{false, nullptr, &aux0};
  Tensor h = reshape(run_block(one, one_leaves, x, ctx0), {14, spec.dim});
  const double l0 = aux0.blocks.at(0).balance.item();
  std::vector<int64_t> rows;
  for (size_t t = 0; t < b.paths.size(); ++t)
    if (b.paths[t].size() > 1) rows.push_back(int64_t(t));
  REQUIRE(!rows.empty());
  REQUIRE(rows.size() < 14);
  const int64_t n1 = int64_t(rows.size());
  Tensor z1 = index_select(h, 0, Tensor::from_vector(rows, {n1}));
  GateOutput g1 = gate_forward(z1, leaves[3], n1, n1, spec.gate, nullptr, nullptr);
  CHECK(b.passes == 2);
  CHECK(b.balance.item() == Approx((l0 + g1.balance.item()) / 2).epsilon(1e-12));
}

TEST_CASE("aux_loss_total weights the mean balance loss, the CMR term and the z-loss by ntokens", "[moe]") {
  nn::AuxLosses aux;
  Tensor b1 = test::grad_input({}, 1, false, 1, 2), b2 = test::grad_input({}, 2, false, 1, 2);
  Tensor cs = test::grad_input({}, 3, false, 5, 6);
  aux.blocks.push_back({"a", b1, Tensor(), cs, 10, 1, {}});
  aux.blocks.push_back({"b", b2, Tensor(), Tensor(), 0, 2, {}});
  config::MoEOptions o;
  o.gate_loss_weight = 0.01;
  o.cmr_loss_weight = 0.02;
  o.cmr_target = 0.8;
  Tensor t = aux_loss_total(aux, 100, o);
  const double mean_b = (b1.item() + b2.item()) / 2, cmr = std::fabs(cs.item() / 10 - 0.8);
  CHECK(t.item() == Approx(0.01 * 100 * mean_b + 0.02 * 100 * cmr).epsilon(1e-12));
  t.backward();
  CHECK(b1.grad().item() == Approx(0.01 * 100 / 2).epsilon(1e-12));
  CHECK(std::fabs(cs.grad().item()) == Approx(0.02 * 100 / 10).epsilon(1e-12));
  AuxLossParts parts = aux_loss_parts(aux, o);
  CHECK(parts.gate_loss == Approx(mean_b));
  CHECK(parts.cmr_loss == Approx(cmr));
  CHECK(parts.blocks == 2);
  SECTION("z-loss") {
    aux.blocks[0].z_loss = Tensor::scalar(3.0, DType::F64);
    aux.blocks[1].z_loss = Tensor::scalar(5.0, DType::F64);
    o.z_loss_weight = 0.001;
    CHECK(aux_loss_total(aux, 100, o).item() ==
          Approx(0.01 * 100 * mean_b + 0.02 * 100 * cmr + 0.001 * 100 * 4.0).epsilon(1e-12));
  }
  SECTION("no MoE blocks: a constant zero") {
    nn::AuxLosses none;
    CHECK(aux_loss_total(none, 100, o).item() == 0.0);
  }
}

TEST_CASE("routing statistics count loads, drops, entropy and requested capacity per language", "[moe]") {
  BlockSpec spec = test::small_spec({2, 2});
  spec.gate.eval_capacity_fraction = 0.3;
  auto leaves = test::block_leaves(spec, 41);
  Tensor x = test::rand({3, 6, spec.dim}, 5, DType::F64);
  Tensor pad = Tensor::zeros({3, 6});
  pad.select(0, 2).narrow(0, 4, 2).fill_(1);  // two PAD tokens
  nn::AuxLosses aux;
  aux.collect_stats = true;
  aux.record_paths = true;
  aux.sentence_lang = {0, 1, 0};
  nn::ForwardContext ctx{false, nullptr, &aux};
  run_block(spec, leaves, x, ctx, pad);
  const BlockRoutingStats* st = aux.stats.find("encoder.layers.1");
  REQUIRE(st != nullptr);
  CHECK(st->tokens == 16);
  int64_t visits = 0;
  for (size_t t = 0; t < 18; ++t)
    if (!(t == 16 || t == 17)) visits += int64_t(aux.blocks[0].paths[t].size());
  CHECK(st->visits == visits);
  CHECK(st->requested_capacity() >= 1.0);
  CHECK(st->requested_capacity() <= 2.0);
  CHECK(st->first_choices == visits);
  CHECK(st->first_dropped > 0);  // capacity 0.3 drops some choices
  auto load = st->load();
  CHECK(std::accumulate(load.begin(), load.end(), 0.0) == Approx(1.0));
  CHECK(st->entropy() > 0);
  CHECK(st->entropy() <= std::log(4.0));
  REQUIRE(st->by_lang.size() == 2);
  CHECK(st->by_lang.at(0).tokens == 10);
  CHECK(st->by_lang.at(1).tokens == 6);
  nlohmann::json j = routing_stats_json(aux.stats, {"de", "fr"});
  REQUIRE(j["moe_routing"].size() == 1);
  CHECK(j["moe_routing"][0]["block"] == "encoder.layers.1");
  CHECK(j["moe_routing"][0]["by_lang"]["fr"]["tokens"] == 6);
  CHECK(j["moe_routing"][0]["load"].size() == 4);
  CHECK(j["moe_routing"][0]["strata"] == nlohmann::json::array({2, 2}));
  CHECK(j["moe_routing"][0]["requested_capacity"].get<double>() == Approx(st->requested_capacity()));
  SECTION("merging adds the counts") {
    RoutingStats total;
    total.merge(aux.stats);
    total.merge(aux.stats);
    CHECK(total.find("encoder.layers.1")->tokens == 32);
    CHECK(total.find("encoder.layers.1")->requested_capacity() == Approx(st->requested_capacity()));
    REQUIRE_THROWS_WITH(total.block("encoder.layers.1", {4, 4}), Catch::Contains("routing stats"));
    CHECK(total.block("encoder.layers.1", {2, 2}).experts == 4);
  }
}
