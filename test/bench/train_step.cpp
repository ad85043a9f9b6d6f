// Training-step benchmark: target tokens/s and model FLOP utilisation (model
// FLOPs per second / the sgemm rate measured in the same run) of one full
// update (forward, label-smoothed loss, backward, Adam) on real LibreOffice
// help en->de batches of about --tokens source tokens, fp32.
//   build/bench/train_step --data DIR [--model small|m4|all] [--tokens 4096] [--steps 6]
// DIR holds binarised data with train.en-de.{en,de}.sbin and spm.model
// (jobs/demo.sh writes data/demo/bin). The model's vocabulary is the
// config's (8k small, 32k M4) whatever the data's: only ids below it occur.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "strata/autograd/ops.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/translation_batches.h"
#include "strata/model/build.h"
#include "strata/train/adam.h"
#include "strata/train/grad_clip.h"

using namespace strata;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Peak of this machine's sgemm with the current threads: the best of a few
// large square products.
double measure_sgemm_gflops() {
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    double s = seconds(t0, Clock::now());
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

config::Config model_config(const std::string& name) {
  config::Config c;
  if (name == "small") {
    c.model.encoder_layers = c.model.decoder_layers = 3;
    c.model.embed_dim = 256;
    c.model.ffn_dim = 1024;
    c.model.attention_heads = 4;
    c.model.vocab_size = 8000;
  } else {  // the paper's M4 dense (transformer_base, 32k shared vocabulary)
    c.model.encoder_layers = c.model.decoder_layers = 6;
    c.model.embed_dim = 512;
    c.model.ffn_dim = 2048;
    c.model.attention_heads = 8;
    c.model.vocab_size = 32000;
  }
  c.model.dropout = 0.1;
  c.model.attention_dropout = 0.1;
  return c;
}

// Forward multiply-accumulates of one batch, from its padded shapes: every
// weight matrix per token, attention products per (query, key) pair, the output
// projection per target token.
double forward_flops(const config::Config& c, int64_t B, int64_t S, int64_t T) {
  const double d = c.model.embed_dim, f = c.model.ffn_dim, V = c.model.vocab_size;
  double macs = 0;
  macs += c.model.encoder_layers * (double(B * S) * (4 * d * d + 2 * d * f) + 2.0 * B * S * S * d);
  macs += c.model.decoder_layers *
          (double(B * T) * (4 * d * d + 2 * d * f) + 2.0 * B * T * T * d +  // self-attention + FFN
           double(B * T) * 2 * d * d + double(B * S) * 2 * d * d + 2.0 * B * T * S * d);  // cross-attention
  macs += double(B * T) * d * V;
  return 2 * macs;
}

struct Result {
  std::string model;
  double tokens_per_s = 0, tflops = 0, mfu = 0, step_ms = 0;
  int64_t params = 0, src_tokens = 0, tgt_tokens = 0;
};

Result run(const std::string& name, const std::string& data_dir, int64_t tokens, int steps, double peak_gflops) {
  config::Config cfg = model_config(name);
  data::SentencePieceVocab vocab(data_dir + "/spm.model");
  data::Direction dir;
  dir.data = data::open_parallel(data_dir, "train", "en", "de");
  dir.tgt_lang_id = vocab.lang_id("de");
  data::BatchOptions bo;
  bo.max_tokens = tokens;
  bo.seed = 1;
  data::TranslationBatches batches({dir}, bo);
  auto plan = batches.epoch_plan(1);
  // the largest batches of the epoch are the ~tokens-sized ones; take them in plan order
  std::vector<data::Batch> use;
  for (const auto& refs : plan) {
    data::Batch b = batches.make_batch(refs);
    if (b.src.numel() >= tokens * 3 / 4) use.push_back(b);
    if (int(use.size()) == steps + 1) break;
  }
  STRATA_CHECK(!use.empty()) << "train_step: no batch of about " << tokens << " tokens in " << data_dir;

  auto model = model::build_model(cfg, cfg.model.vocab_size, vocab.pad());
  model->init_parameters(1);
  train::Adam adam(model->named_parameters());
  Result r;
  r.model = name;
  r.params = model->num_parameters();
  double total_s = 0, flops = 0;
  int timed = 0;
  for (size_t i = 0; i < use.size(); ++i) {
    const data::Batch& b = use[i];
    Generator gen(i);
    nn::ForwardContext ctx{true, &gen, nullptr};
    auto t0 = Clock::now();
    Tensor logits = model->forward(b.src, b.prev, ctx);
    const int64_t N = b.target.numel();
    CrossEntropyResult ce =
        label_smoothed_cross_entropy(reshape(logits, {N, cfg.model.vocab_size}), b.target.reshape({N}), 0.1, 1);
    ce.loss.backward();
    train::scale_grads(model->parameters(), 1.0 / double(ce.tokens));
    adam.step(1e-4);
    adam.zero_grad();
    double s = seconds(t0, Clock::now());
    if (i == 0) continue;  // warm-up: first touch of every buffer
    total_s += s;
    flops += 3 * forward_flops(cfg, b.src.size(0), b.src.size(1), b.prev.size(1));  // fwd + 2x bwd
    r.src_tokens += b.src_tokens;
    r.tgt_tokens += b.tgt_tokens;
    ++timed;
  }
  r.step_ms = 1e3 * total_s / timed;
  r.tokens_per_s = double(r.tgt_tokens) / total_s;
  r.tflops = flops / total_s / 1e12;
  r.mfu = flops / total_s / 1e9 / peak_gflops;
  r.src_tokens /= timed;
  r.tgt_tokens /= timed;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Strata training-step benchmark (tokens/s and model FLOP utilisation)"};
  std::string data_dir, which = "all";
  int64_t tokens = 4096;
  int steps = 6;
  app.add_option("--data", data_dir, "binarised LibreOffice help data with train.en-de.* and spm.model")->required();
  app.add_option("--model", which, "small | m4 | all");
  app.add_option("--tokens", tokens, "source tokens per update (padded)");
  app.add_option("--steps", steps, "timed updates (after one warm-up)");
  CLI11_PARSE(app, argc, argv);
  try {
    double peak = measure_sgemm_gflops();
    std::printf("sgemm peak (2048^3, same run): %.1f GFLOP/s\n", peak);
    std::printf("%-6s %9s %10s %10s %10s %12s %10s %8s\n", "model", "params", "src tok", "tgt tok", "step ms",
                "tgt tok/s", "TFLOP/s", "MFU");
    std::vector<std::string> models = which == "all" ? std::vector<std::string>{"small", "m4"}
                                                     : std::vector<std::string>{which};
    for (const auto& m : models) {
      Result r = run(m, data_dir, tokens, steps, peak);
      std::printf("%-6s %8.1fM %10lld %10lld %10.0f %12.0f %10.3f %7.1f%%\n", r.model.c_str(), r.params / 1e6,
                  (long long)r.src_tokens, (long long)r.tgt_tokens, r.step_ms, r.tokens_per_s, r.tflops,
                  100 * r.mfu);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
