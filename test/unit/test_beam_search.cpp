#include <cmath>
#include <functional>

#include "strata/autograd/ops.h"
#include "strata/backend/accumulate.h"
#include "strata/core/grad_mode.h"
#include "strata/decode/beam_search.h"
#include "test_util.h"

using namespace strata;

namespace {
std::unique_ptr<model::TransformerModel> small_model(int64_t vocab, uint64_t seed) {
  config::ModelOptions o;
  o.encoder_layers = 1;
  o.decoder_layers = 2;
  o.embed_dim = 16;
  o.ffn_dim = 32;
  o.attention_heads = 2;
  o.max_source_positions = 32;
  o.max_target_positions = 32;
  auto m = std::make_unique<model::TransformerModel>(o, vocab, 1, model::dense_ffn_factory(o));
  m->init_parameters(seed);
  // sharpen the output distribution so search decisions are not near-ties
  NoGradGuard ng;
  for (auto& [n, p] : m->named_parameters())
    if (n == "encoder.embed_tokens.weight") backend::scale_(p, 4.0);
  return m;
}

// Sum of log p(y_t | y_<t, x) by teacher forcing; y ends with EOS.
double sequence_logprob(model::TransformerModel& m, const Tensor& src, const std::vector<int64_t>& y, int64_t bos) {
  NoGradGuard ng;
  nn::ForwardContext ctx;
  std::vector<int64_t> prev{bos};
  prev.insert(prev.end(), y.begin(), y.end() - 1);
  Tensor logits = m.forward(src, Tensor::from_vector(prev, {1, int64_t(prev.size())}), ctx);
  Tensor lp = log_softmax(reshape(logits, {int64_t(y.size()), m.vocab_size()}), -1);
  double s = 0;
  for (size_t t = 0; t < y.size(); ++t) s += lp.detach().select(0, int64_t(t)).to_vector<float>()[size_t(y[t])];
  return s;
}
}  // namespace

TEST_CASE("greedy search picks the argmax token at every step", "[decode]") {
  auto seed = GENERATE(1u, 2u, 3u);
  auto m = small_model(12, seed);
  Tensor src = Tensor::from_vector<int64_t>({5, 6, 7, 8}, {1, 4});
  decode::SearchOptions opt;
  opt.beam = 1;
  opt.max_len_a = 0;
  opt.max_len_b = 6;
  auto hyps = decode::beam_search(*m, src, opt);
  REQUIRE(hyps.size() == 1);
  REQUIRE(hyps[0].size() == 1);
  // manual greedy with full (non-incremental) decoding
  NoGradGuard ng;
  nn::ForwardContext ctx;
  std::vector<int64_t> prev{opt.bos}, out;
  for (int step = 0; step < 7; ++step) {
    Tensor logits = m->forward(src, Tensor::from_vector(prev, {1, int64_t(prev.size())}), ctx);
    std::vector<float> last = logits.detach().select(1, int64_t(prev.size()) - 1).contiguous().to_vector<float>();
    int64_t best = -1;
    for (int64_t v = 0; v < 12; ++v) {
      if (v == opt.pad) continue;
      if (step == 6 && v != opt.eos) continue;  // length limit forces EOS
      if (best < 0 || last[size_t(v)] > last[size_t(best)]) best = v;
    }
    if (best == opt.eos) break;
    out.push_back(best);
    prev.push_back(best);
  }
  CHECK(hyps[0][0].tokens == out);
}

TEST_CASE("a wide beam finds the exhaustive best sequence", "[decode]") {
  auto seed = GENERATE(4u, 5u);
  const int64_t V = 8;  // 0 bos-like, 1 pad, 2 eos, 3 unk, 4..7 words
  auto m = small_model(V, seed);
  Tensor src = Tensor::from_vector<int64_t>({5, 6, 7}, {1, 3});
  decode::SearchOptions opt;
  opt.beam = 25;
  opt.nbest = 3;
  opt.max_len_a = 0;
  opt.max_len_b = 2;
  opt.allow_unk = false;
  opt.prefix = {4};
  const std::vector<int64_t> words{0, 4, 5, 6, 7};
  double best = -1e300;
  std::vector<int64_t> best_seq;
  std::function<void(std::vector<int64_t>)> enumerate = [&](std::vector<int64_t> y) {
    std::vector<int64_t> with_eos = y;
    with_eos.push_back(opt.eos);
    double score = sequence_logprob(*m, src, with_eos, opt.bos) / std::pow(double(with_eos.size()), opt.lenpen);
    if (score > best) best = score, best_seq = std::vector<int64_t>(y.begin() + 1, y.end());
    if (y.size() < 3)
      for (int64_t w : words) {
        auto z = y;
        z.push_back(w);
        enumerate(z);
      }
  };
  enumerate({4});
  auto hyps = decode::beam_search(*m, src, opt);
  REQUIRE(hyps[0].size() == 3);
  CHECK(hyps[0][0].tokens == best_seq);
  CHECK(hyps[0][0].score == Approx(best).epsilon(1e-4));
  CHECK(hyps[0][0].score >= hyps[0][1].score);
  CHECK(hyps[0][1].score >= hyps[0][2].score);
  // positional scores: prefix + tokens + EOS, and they sum to the unnormalised score
  CHECK(hyps[0][0].positional_scores.size() == best_seq.size() + 2);
}

TEST_CASE("beam search results do not depend on the rest of the batch", "[decode]") {
  auto m = small_model(16, 9);
  decode::SearchOptions opt;
  opt.beam = 4;
  opt.nbest = 2;
  opt.prefix = {4};
  Tensor alone = Tensor::from_vector<int64_t>({7, 8, 9}, {1, 3});
  Tensor batch = Tensor::from_vector<int64_t>({10, 11, 12, 13, 14, 7, 8, 9, 1, 1}, {2, 5});
  auto a = decode::beam_search(*m, alone, opt);
  auto b = decode::beam_search(*m, batch, opt);
  REQUIRE(b.size() == 2);
  REQUIRE(a[0].size() == b[1].size());
  for (size_t i = 0; i < a[0].size(); ++i) {
    CHECK(a[0][i].tokens == b[1][i].tokens);
    CHECK(a[0][i].score == Approx(b[1][i].score).epsilon(1e-4));
  }
}

TEST_CASE("beam search validates its options", "[decode]") {
  auto m = small_model(8, 1);
  Tensor src = Tensor::from_vector<int64_t>({5}, {1, 1});
  decode::SearchOptions opt;
  opt.beam = 0;
  REQUIRE_THROWS_WITH(decode::beam_search(*m, src, opt), Catch::Contains("beam must be"));
  opt.beam = 2;
  opt.nbest = 3;
  REQUIRE_THROWS_WITH(decode::beam_search(*m, src, opt), Catch::Contains("nbest"));
}
