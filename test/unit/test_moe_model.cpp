// MoE models end to end: assembly per moe_freq, checkpoint names with global
// expert ids, parameter and FLOP counts against the SMoE paper's tables,
// incremental decoding, and a few training steps with the aux loss.
#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/model/build.h"
#include "strata/moe/moe_block.h"
#include "strata/train/adam.h"
#include "test_util.h"

using namespace strata;

namespace {

config::Config tiny_moe(std::vector<int> strata = {2, 2}) {
  config::Config c;
  c.model.encoder_layers = 2;
  c.model.decoder_layers = 2;
  c.model.embed_dim = 16;
  c.model.ffn_dim = 24;
  c.model.attention_heads = 4;
  c.model.max_source_positions = 32;
  c.model.max_target_positions = 32;
  c.model.dropout = 0.0;
  c.model.attention_dropout = 0.0;
  int e = 0;
  for (int n : strata) e += n;
  c.moe.experts = e;
  c.moe.strata = strata;
  return c;
}

bool has_name(const nn::NamedTensors& ps, const std::string& n) {
  for (auto& [name, t] : ps)
    if (name == n) return true;
  return false;
}

config::Config paper(int d, int f, int heads, int experts, std::vector<int> strata = {}) {
  config::Config c;  // defaults: 6+6 layers, moe_freq 2
  c.model.embed_dim = d;
  c.model.ffn_dim = f;
  c.model.attention_heads = heads;
  c.moe.experts = experts;
  c.moe.strata = strata.empty() && experts > 0 ? std::vector<int>{experts} : strata;
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector(v, {B, T}); }

}  // namespace

TEST_CASE("MoE blocks sit in the layers moe_freq selects, with fairseq-like names and global expert ids", "[moe]") {
  config::Config c = tiny_moe({2, 2});
  c.model.encoder_layers = 4;
  auto m = model::build_model(c, 23, 1);
  auto ps = m->named_parameters();
  CHECK(has_name(ps, "encoder.layers.0.fc1.weight"));              // dense layer 1
  CHECK(has_name(ps, "encoder.layers.1.final_layer_norm.weight"));  // MoE layer 2
  CHECK(has_name(ps, "encoder.layers.1.moe_layer.gate.0.wg.weight"));
  CHECK(has_name(ps, "encoder.layers.1.moe_layer.gate.1.wg.weight"));
  CHECK(has_name(ps, "encoder.layers.1.moe_layer.experts.3.fc1.weight"));
  CHECK(has_name(ps, "encoder.layers.3.moe_layer.experts.0.fc2.bias"));
  CHECK(has_name(ps, "encoder.layers.1.hmoe_layernorms.1.weight"));
  CHECK(has_name(ps, "decoder.layers.1.moe_layer.experts.2.fc2.weight"));
  CHECK(!has_name(ps, "encoder.layers.1.fc1.weight"));
  CHECK(!has_name(ps, "encoder.layers.2.moe_layer.gate.0.wg.weight"));
  CHECK(model::moe_blocks(*m).size() == 3);
  for (auto& [n, t] : ps)
    if (n == "encoder.layers.1.moe_layer.gate.1.wg.weight") CHECK(t.shape() == Shape{2, 16});
  CHECK(m->num_parameters() == model::count_parameters(c, 23));
  SECTION("encoder and decoder placement can differ") {
    c.moe.encoder_moe_freq = 0;
    c.moe.decoder_moe_freq = 1;
    auto m2 = model::build_model(c, 23, 1);
    auto p2 = m2->named_parameters();
    CHECK(!has_name(p2, "encoder.layers.1.moe_layer.gate.0.wg.weight"));
    CHECK(has_name(p2, "decoder.layers.0.moe_layer.gate.0.wg.weight"));
    CHECK(model::moe_blocks(*m2).size() == 2);
    CHECK(m2->num_parameters() == model::count_parameters(c, 23));
  }
}

TEST_CASE("count_parameters matches the built model for every MoE type", "[moe]") {
  struct V {
    const char* name;
    void (*set)(config::Config&);
  } variants[] = {
      {"dense", [](config::Config& c) { c.moe.experts = 0; c.moe.strata.clear(); }},
      {"top-2", [](config::Config& c) { c.moe.strata = {4}; }},
      {"top-1", [](config::Config& c) { c.moe.strata = {4}; c.moe.top1 = true; }},
      {"eom", [](config::Config& c) { c.moe.strata = {4}; c.moe.moe_type = config::MoEType::Eom; }},
      {"cmr", [](config::Config& c) { c.moe.strata = {4}; c.moe.moe_type = config::MoEType::Cmr; }},
      {"smoe 1-3", [](config::Config& c) { c.moe.strata = {1, 3}; }},
      {"smoe without hmoe LNs", [](config::Config& c) { c.moe.hmoe_layernorm = false; }},
      {"every layer", [](config::Config& c) { c.moe.moe_freq = 1; }},
  };
  for (const V& v : variants) {
    SECTION(v.name) {
      config::Config c = tiny_moe({2, 2});
      v.set(c);
      auto m = model::build_model(c, 31, 1);
      CHECK(m->num_parameters() == model::count_parameters(c, 31));
    }
  }
}

TEST_CASE("parameter counts reproduce the SMoE paper's M4 and M15 models", "[moe]") {
  const int64_t V = 32000;
  auto within = [](int64_t got, double want) { return std::fabs(double(got) - want) <= 0.01 * want; };
  config::Config m4_dense = paper(512, 2048, 8, 0), m4_moe = paper(512, 2048, 8, 8);
  config::Config m4_cmr = m4_moe, m4_smoe = paper(512, 2048, 8, 8, {2, 2, 2, 2});
  m4_cmr.moe.moe_type = config::MoEType::Cmr;
  CHECK(within(model::count_parameters(m4_dense, V), 60e6));
  CHECK(within(model::count_parameters(m4_moe, V), 148e6));
  CHECK(within(model::count_parameters(m4_cmr, V), 161e6));
  CHECK(within(model::count_parameters(m4_smoe, V), 148e6));
  config::Config m15_dense = paper(1024, 4096, 16, 0), m15_moe = paper(1024, 4096, 16, 16);
  CHECK(within(model::count_parameters(m15_dense, V), 209e6));
  CHECK(within(model::count_parameters(m15_moe, V), 963e6));
  CHECK(within(model::count_parameters(paper(1024, 4096, 16, 16, {4, 12}), V), 963e6));
  CHECK(within(model::count_parameters(paper(1024, 4096, 16, 32), V), 1.77e9));
  config::Config m15_cmr = m15_moe;
  m15_cmr.moe.moe_type = config::MoEType::Cmr;
  CHECK(within(model::count_parameters(m15_cmr, V), 1.01e9));
}

TEST_CASE("FLOPs per token reproduce the paper's tables at its context length", "[moe]") {
  const int64_t V = 32000, ctx = model::kPaperContextTokens;
  auto f = [&](const config::Config& c) { return model::flops_per_token(c, V, ctx) / 1e6; };
  auto cmr = [](config::Config c) {
    c.moe.moe_type = config::MoEType::Cmr;
    return c;
  };
  auto top1 = [](config::Config c) {
    c.moe.top1 = true;
    return c;
  };
  // Table 1 (M4, E = 8)
  CHECK(f(paper(512, 2048, 8, 0)) == Approx(167).epsilon(0.01));
  CHECK(f(paper(512, 2048, 8, 8)) == Approx(192).epsilon(0.01));
  CHECK(f(top1(paper(512, 2048, 8, 8))) == Approx(167).epsilon(0.01));
  CHECK(f(cmr(paper(512, 2048, 8, 8))) == Approx(217).epsilon(0.01));
  CHECK(f(paper(512, 2048, 8, 8, {4, 4})) == Approx(217).epsilon(0.01));
  CHECK(f(paper(512, 2048, 8, 8, {2, 2, 2, 2})) == Approx(247).epsilon(0.01));
  // Table 2 (M15, E = 16)
  CHECK(f(paper(1024, 4096, 16, 0)) == Approx(506).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16)) == Approx(606).epsilon(0.01));
  CHECK(f(cmr(paper(1024, 4096, 16, 16))) == Approx(707).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {4, 12})) == Approx(656).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {12, 4})) == Approx(757).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {8, 8})) == Approx(707).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {4, 4, 8})) == Approx(724).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {8, 4, 4})) == Approx(805).epsilon(0.01));
  CHECK(f(paper(1024, 4096, 16, 16, {4, 4, 4, 4})) == Approx(825).epsilon(0.01));
}

TEST_CASE("expected stratum visits under uniform routing give the requested capacity", "[moe]") {
  auto rc = [](std::vector<int> s) {
    double t = 0;
    for (double p : model::expected_stratum_visits(s)) t += p;
    return t;
  };
  CHECK(rc({8}) == 1.0);
  CHECK(rc({4, 4}) == Approx(1.5));
  CHECK(rc({4, 12}) == Approx(1.25));
  CHECK(rc({4, 4, 8}) == Approx(1.0 + 0.25 + 1.0 / 3));
  CHECK(rc({2, 2, 2, 2}) == Approx(2.0 + 1.0 / 12));
  auto p = model::expected_stratum_visits({2, 2, 2, 2});
  CHECK(p[1] == Approx(0.25));
  CHECK(p[3] == Approx(0.5));
  config::Config c = paper(512, 2048, 8, 8, {2, 2, 2, 2});
  model::ModelSummary s = model::summarize(c, 32000);
  CHECK(s.moe_blocks == 6);
  CHECK(s.requested_capacity == Approx(2.0833).epsilon(1e-3));
  CHECK(s.str().find("6 MoE blocks") != std::string::npos);
  CHECK(model::summarize(paper(512, 2048, 8, 0), 32000).str().find("MoE") == std::string::npos);
}

TEST_CASE("the incremental decoder runs the SMoE blocks per step and matches teacher forcing", "[moe]") {
  config::Config c = tiny_moe({1, 2, 1});
  c.moe.second_expert_policy = config::SecondExpertPolicy::Argmax;  // per-token routing with no row-keyed noise
  c.moe.eval_capacity_token_fraction = 1.0;
  auto m = model::build_model(c, 23, 1);
  m->init_parameters(3);
  nn::ForwardContext ctx;
  Tensor src = ids({5, 6, 7, 8, 2, 9, 10, 2, 1, 1}, 2, 5);
  Tensor prev = ids({2, 11, 12, 13, 2, 14, 15, 16}, 2, 4);
  model::EncoderOutput enc = m->encode(src, ctx);
  Tensor full = m->decode(prev, enc, ctx);
  model::DecoderState st;
  for (int64_t t = 0; t < 4; ++t) {
    Tensor step = m->decode_step(prev.narrow(1, t, 1).contiguous(), enc, st, ctx);
    test::require_close(step.detach(), full.detach().narrow(1, t, 1), 1e-4, 1e-5);
  }
}

TEST_CASE("the evaluation capacity can be raised for decoding", "[moe]") {
  config::Config c = tiny_moe({4});
  c.moe.eval_capacity_token_fraction = 0.05;  // drops most second choices
  auto m = model::build_model(c, 23, 1);
  m->init_parameters(4);
  nn::ForwardContext ctx;
  Tensor src = ids({5, 6, 7, 8, 9, 10, 11, 12, 13, 2}, 1, 10);
  Tensor a = m->encode(src, ctx).out;
  model::set_moe_eval_capacity(*m, 1.0);
  Tensor b = m->encode(src, ctx).out;
  nn::AuxLosses aux;
  aux.eval_capacity_token_fraction = 1.0;
  nn::ForwardContext ctx2{false, nullptr, &aux};
  model::set_moe_eval_capacity(*m, std::nullopt);
  Tensor c2 = m->encode(src, ctx2).out;
  CHECK(a.to_vector<float>() != b.to_vector<float>());
  test::require_close(c2, b);
}

TEST_CASE("a tiny SMoE model learns a batch with the aux loss in a few Adam steps", "[moe]") {
  config::Config c = tiny_moe({2, 2});
  c.model.dropout = 0.1;
  auto m = model::build_model(c, 23, 1);
  m->init_parameters(5);
  train::Adam adam(m->named_parameters());
  Tensor src = ids({5, 6, 7, 8, 2, 9, 10, 11, 2, 1, 12, 13, 14, 15, 2}, 3, 5);
  Tensor prev = ids({2, 16, 17, 18, 2, 19, 20, 1, 2, 21, 22, 17}, 3, 4);
  Tensor tgt = ids({16, 17, 18, 2, 19, 20, 2, 1, 21, 22, 17, 2}, 3, 4);
  std::vector<double> losses;
  double first_aux = 0, last_aux = 0;
  for (int step = 0; step < 40; ++step) {
    Generator gen{uint64_t(step)};
    nn::AuxLosses aux;
    nn::ForwardContext ctx{true, &gen, &aux};
    Tensor logits = m->forward(src, prev, ctx);
    CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {12, 23}), reshape(tgt, {12}), 0.1, 1);
    REQUIRE(aux.blocks.size() == 2);
    Tensor loss = ce.loss + moe::aux_loss_total(aux, ce.tokens, c.moe);
    loss.backward();
    for (auto& p : m->parameters())
      if (p.grad().defined()) p.set_grad(p.grad() * (1.0 / double(ce.tokens)));
    adam.step(3e-3);
    adam.zero_grad();
    losses.push_back(ce.loss.item() / double(ce.tokens));
    (step == 0 ? first_aux : last_aux) = moe::aux_loss_parts(aux, c.moe).gate_loss;
  }
  INFO("loss per token: first " << losses.front() << ", last " << losses.back());
  CHECK(losses.back() < 0.5 * losses.front());
  CHECK(first_aux > 0);
  CHECK(last_aux > 0);
  // every expert parameter got trained through the stacked view
  int trained = 0;
  train::Adam& a = adam;
  for (size_t i = 0; i < a.params().size(); ++i)
    if (a.params()[i].first.find("moe_layer.experts") != std::string::npos && a.param_steps(i) > 0) ++trained;
  CHECK(trained == 2 * 4 * 4);
}
