#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/model/transformer_model.h"
#include "test_util.h"

using namespace strata;

namespace {
config::ModelOptions tiny_options() {
  config::ModelOptions o;
  o.encoder_layers = 2;
  o.decoder_layers = 2;
  o.embed_dim = 16;
  o.ffn_dim = 32;
  o.attention_heads = 4;
  o.max_source_positions = 64;
  o.max_target_positions = 64;
  return o;
}
std::unique_ptr<model::TransformerModel> tiny_model(uint64_t seed = 1) {
  auto o = tiny_options();
  auto m = std::make_unique<model::TransformerModel>(o, 23, 1, model::dense_ffn_factory(o));
  m->init_parameters(seed);
  return m;
}
Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector(v, {B, T}); }
}  // namespace

TEST_CASE("the model has fairseq-style parameter names and one shared embedding", "[model]") {
  auto m = tiny_model();
  auto params = m->named_parameters();
  std::vector<std::string> names;
  for (auto& [n, t] : params) names.push_back(n);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("encoder.embed_tokens.weight"));
  CHECK(has("encoder.layers.0.self_attn.q_proj.weight"));
  CHECK(has("encoder.layers.1.fc1.bias"));
  CHECK(has("encoder.layers.1.final_layer_norm.weight"));
  CHECK(has("decoder.layers.1.encoder_attn.out_proj.bias"));
  CHECK(has("decoder.layers.0.encoder_attn_layer_norm.weight"));
  CHECK(has("encoder.layer_norm.weight"));
  CHECK(has("decoder.layer_norm.bias"));
  CHECK(!has("decoder.embed_tokens.weight"));
  // d=16, ffn=32, V=23: embeddings 368; enc layer: attn 4*(256+16) + 2 LN*32 + ffn (512+32+512+16);
  // dec layer adds a second attention and LN; final LNs 2*32.
  const int64_t attn = 4 * (16 * 16 + 16), ln = 32, ffn = 16 * 32 + 32 + 32 * 16 + 16;
  CHECK(m->num_parameters() == 23 * 16 + 2 * (attn + 2 * ln + ffn) + 2 * (2 * attn + 3 * ln + ffn) + 2 * ln);
}

TEST_CASE("initialisation is keyed by parameter name and seed", "[model]") {
  auto a = tiny_model(5), b = tiny_model(5), c = tiny_model(6);
  auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
  CHECK(pa[0].second.to_vector<float>() == pb[0].second.to_vector<float>());
  CHECK(pa[0].second.to_vector<float>() != pc[0].second.to_vector<float>());
  // padding row of the embedding is zero
  Tensor emb = pa[0].second;
  for (float v : emb.detach().select(0, 1).to_vector<float>()) REQUIRE(v == 0.0f);
}

TEST_CASE("sinusoidal positions follow fairseq's table", "[model]") {
  Tensor t = nn::sinusoidal_table(10, 8, 1);
  CHECK(t.detach().select(0, 1).to_vector<float>() == std::vector<float>(8, 0.0f));
  // row 3, i = 1: f = exp(-ln(10000)/3) -> sin(3 f), cos(3 f)
  double f = std::exp(-std::log(10000.0) / 3);
  CHECK(t.detach().select(0, 3).to_vector<float>()[1] == Approx(std::sin(3 * f)).epsilon(1e-6));
  CHECK(t.detach().select(0, 3).to_vector<float>()[5] == Approx(std::cos(3 * f)).epsilon(1e-6));
  Tensor p = nn::make_positions(ids({5, 6, 7, 1, 1, 9, 1, 1}, 2, 4), 1);
  CHECK(p.to_vector<int64_t>() == std::vector<int64_t>{2, 3, 4, 1, 1, 3, 1, 1});
}

TEST_CASE("padding does not change the output of real tokens", "[model]") {
  auto m = tiny_model();
  nn::ForwardContext ctx;  // eval: no dropout
  Tensor src_short = ids({5, 6, 7}, 1, 3), src_padded = ids({5, 6, 7, 1, 1}, 1, 5);
  Tensor prev_short = ids({2, 8}, 1, 2), prev_padded = ids({2, 8, 1}, 1, 3);
  Tensor a = m->forward(src_short, prev_short, ctx);
  Tensor b = m->forward(src_padded, prev_padded, ctx);
  test::require_close(b.detach().narrow(1, 0, 2), a, 1e-5, 1e-6);
}

TEST_CASE("the decoder cannot see future target tokens", "[model]") {
  auto m = tiny_model();
  nn::ForwardContext ctx;
  Tensor src = ids({5, 6, 7, 8}, 1, 4);
  Tensor a = m->forward(src, ids({2, 8, 9, 10}, 1, 4), ctx);
  Tensor b = m->forward(src, ids({2, 8, 15, 3}, 1, 4), ctx);
  test::require_close(b.detach().narrow(1, 0, 2), a.detach().narrow(1, 0, 2), 1e-6, 1e-7);
  std::vector<float> x = a.detach().narrow(1, 2, 1).contiguous().to_vector<float>();
  std::vector<float> y = b.detach().narrow(1, 2, 1).contiguous().to_vector<float>();
  CHECK(x != y);
}

TEST_CASE("incremental decoding equals full decoding", "[model]") {
  auto m = tiny_model(3);
  nn::ForwardContext ctx;
  Tensor src = ids({5, 6, 7, 8, 9, 1}, 2, 3);
  Tensor prev = ids({2, 11, 12, 13, 2, 14, 15, 16}, 2, 4);
  model::EncoderOutput enc = m->encode(src, ctx);
  Tensor full = m->decode(prev, enc, ctx);
  model::DecoderState state;
  for (int64_t t = 0; t < 4; ++t) {
    Tensor step = m->decode_step(prev.narrow(1, t, 1), enc, state, ctx);
    test::require_close(step, full.detach().narrow(1, t, 1), 1e-5, 1e-6);
  }
  SECTION("and survives reordering the batch (beam search)") {
    model::DecoderState s2;
    m->decode_step(prev.narrow(1, 0, 1), enc, s2, ctx);
    Tensor order = Tensor::from_vector<int64_t>({1, 0}, {2});
    s2.reorder(order);
    model::EncoderOutput enc_swapped{index_select(enc.out, 0, order), index_select(enc.pad, 0, order)};
    Tensor prev_swapped = index_select(prev, 0, order);
    Tensor step = m->decode_step(prev_swapped.narrow(1, 1, 1), enc_swapped, s2, ctx);
    test::require_close(step.detach().select(0, 0), full.detach().select(0, 1).narrow(0, 1, 1), 1e-5, 1e-6);
  }
}

TEST_CASE("training-mode forward is random only through the generator", "[model]") {
  auto o = tiny_options();
  o.dropout = 0.3;
  o.attention_dropout = 0.1;
  model::TransformerModel m(o, 23, 1, model::dense_ffn_factory(o));
  m.init_parameters(1);
  Tensor src = ids({5, 6, 7}, 1, 3), prev = ids({2, 8, 9}, 1, 3);
  Generator g1(7), g2(7), g3(8);
  nn::ForwardContext c1{true, &g1}, c2{true, &g2}, c3{true, &g3};
  Tensor a = m.forward(src, prev, c1), b = m.forward(src, prev, c2), c = m.forward(src, prev, c3);
  CHECK(a.detach().to_vector<float>() == b.detach().to_vector<float>());
  CHECK(a.detach().to_vector<float>() != c.detach().to_vector<float>());
  nn::ForwardContext missing{true, nullptr};
  REQUIRE_THROWS_WITH(m.forward(src, prev, missing), Catch::Contains("random generator"));
}

TEST_CASE("a loss through the whole model back-propagates into every parameter", "[model]") {
  auto m = tiny_model(2);
  nn::ForwardContext ctx;
  Tensor src = ids({5, 6, 7, 8, 9, 1}, 2, 3), prev = ids({2, 11, 12, 2, 14, 1}, 2, 3);
  Tensor tgt = Tensor::from_vector<int64_t>({11, 12, 2, 14, 2, 1}, {6});
  Tensor logits = m->forward(src, prev, ctx);
  CrossEntropyResult r = label_smoothed_cross_entropy(reshape(logits, {6, 23}), tgt, 0.1, 1);
  r.loss.backward();
  for (auto& [name, p] : m->named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    double norm = 0;
    for (float v : p.grad().to_vector<float>()) norm += double(v) * v;
    CHECK(norm > 0);
  }
}

TEST_CASE("the model refuses sequences longer than its positions", "[model]") {
  auto m = tiny_model();
  nn::ForwardContext ctx;
  std::vector<int64_t> long_ids(70, 5);
  REQUIRE_THROWS_WITH(m->encode(ids(long_ids, 1, 70), ctx), Catch::Contains("exceeds the 64 positions"));
}
