// MoE training-step benchmark: one full update (forward, label-smoothed loss
// plus the MoE aux loss, backward, Adam) of the demo-size model (3+3 layers,
// d 256, ffn 1024, 4 heads, 8k vocabulary, MoE blocks in layer 2 of encoder
// and decoder) as dense, top-2 MoE (8 experts) and SMoE 2-2-2-2 and 4-4, on
// random token batches of about --tokens source tokens.
//
// For each model it reports the step time, its ratio to the dense step, the
// ratio the FLOPs predict (forward FLOPs of the batch with the MoE blocks'
// measured strata visits), their quotient (1.0 = the MoE costs exactly what
// its FLOPs say), and where the MoE blocks spend time: gate, dispatch,
// combine (forward + backward: the routing overhead), all-to-all copies, the
// pass loop's row moves, expert GEMMs (forward).
//   build/bench/moe_step [--tokens 4096] [--steps 4] [--models dense,moe,smoe2222,smoe44]
// Steps run round-robin over the models so a change in machine load hits all;
// the fastest step of each model is the headline (least disturbed by other
// processes on a shared machine), the median is printed beside it.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <fstream>
#include <nlohmann/json.hpp>

#include "strata/autograd/ops.h"
#include "strata/model/build.h"
#include "strata/moe/aux_losses.h"
#include "strata/moe/profile.h"
#include "strata/train/adam.h"
#include "strata/train/grad_clip.h"

using namespace strata;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// CPU seconds of all threads of this process: on a shared machine this counts
// the work of a step without the time other processes held the cores.
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

config::Config demo_config(const std::string& kind) {
  config::Config c;
  c.model.encoder_layers = c.model.decoder_layers = 3;
  c.model.embed_dim = 256;
  c.model.ffn_dim = 1024;
  c.model.attention_heads = 4;
  c.model.vocab_size = 8000;
  c.model.dropout = 0.1;
  c.model.attention_dropout = 0.1;
  if (kind == "moe") {
    c.moe.experts = 8;
    c.moe.strata = {8};
  } else if (kind == "smoe2222") {
    c.moe.experts = 8;
    c.moe.strata = {2, 2, 2, 2};
  } else if (kind == "smoe44") {
    c.moe.experts = 8;
    c.moe.strata = {4, 4};
  } else {
    STRATA_CHECK(kind == "dense") << "moe_step: unknown model '" << kind << "' (dense, moe, smoe2222, smoe44)";
  }
  return c;
}

// Forward FLOPs of a batch [B, S] -> [B, T] from its shapes: weight matrices
// per token, attention products per (query, key) pair, the output projection;
// an MoE block costs its gates and 2 experts per strata visit (measured).
struct Batch {
  Tensor src, prev, target;
};

double forward_flops(const config::Config& c, int64_t B, int64_t S, int64_t T, double enc_visits, double dec_visits) {
  const double d = c.model.embed_dim, f = c.model.ffn_dim, V = c.model.vocab_size;
  const double ffn = 2 * d * f;
  double macs = 0;
  for (int i = 0; i < c.model.encoder_layers; ++i) {
    const bool moe = c.moe.is_moe_layer(false, i);
    const double per_tok = moe ? enc_visits * (2 * ffn + d * c.moe.experts) : ffn;
    macs += double(B * S) * (4 * d * d + per_tok) + 2.0 * B * S * S * d;
  }
  for (int i = 0; i < c.model.decoder_layers; ++i) {
    const bool moe = c.moe.is_moe_layer(true, i);
    const double per_tok = moe ? dec_visits * (2 * ffn + d * c.moe.experts) : ffn;
    macs += double(B * T) * (4 * d * d + per_tok) + 2.0 * B * T * T * d;
    macs += double(B * T) * 2 * d * d + double(B * S) * 2 * d * d + 2.0 * B * T * S * d;  // cross-attention
  }
  macs += double(B * T) * d * V;
  return 2 * macs;
}

struct Runner {
  std::string name;
  config::Config cfg;
  std::unique_ptr<model::TransformerModel> model;
  std::unique_ptr<train::Adam> adam;
  std::vector<double> step_s, cpu_s;
  moe::MoEProfile prof;
  moe::RoutingStats stats;  // of the timed steps
  double enc_visits = 1, dec_visits = 1;  // strata visits per token in the MoE blocks (last step)
};

void step(Runner& r, const Batch& b, uint64_t seed) {
  const int64_t V = r.cfg.model.vocab_size;
  moe::profile().reset();
  moe::profile().enabled = r.cfg.moe.enabled();
  Generator gen(seed);
  nn::AuxLosses aux;
  aux.collect_stats = r.cfg.moe.enabled();
  for (int64_t i = 0; i < b.src.size(0); ++i) aux.sentence_lang.push_back(int32_t(i % 4));  // round-robin fake languages
  nn::ForwardContext ctx{true, &gen, &aux};
  auto t0 = Clock::now();
  const double c0 = cpu_seconds();
  Tensor logits = r.model->forward(b.src, b.prev, ctx);
  const int64_t N = b.target.numel();
  CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {N, V}), b.target.reshape({N}), 0.1, 1);
  Tensor loss = ce.loss + moe::aux_loss_total(aux, ce.tokens, r.cfg.moe);
  loss.backward();
  train::scale_grads(r.model->parameters(), 1.0 / double(ce.tokens));
  r.adam->step(1e-4);
  r.adam->zero_grad();
  r.step_s.push_back(seconds(t0, Clock::now()));
  r.cpu_s.push_back(cpu_seconds() - c0);
  moe::profile().enabled = false;
  if (r.cfg.moe.enabled()) {
    moe::MoEProfile p = moe::profile();
    r.prof.gate_fwd += p.gate_fwd;
    r.prof.gate_bwd += p.gate_bwd;
    r.prof.dispatch_fwd += p.dispatch_fwd;
    r.prof.dispatch_bwd += p.dispatch_bwd;
    r.prof.combine_fwd += p.combine_fwd;
    r.prof.combine_bwd += p.combine_bwd;
    r.prof.exchange_fwd += p.exchange_fwd;
    r.prof.exchange_bwd += p.exchange_bwd;
    r.prof.rows_fwd += p.rows_fwd;
    r.prof.rows_bwd += p.rows_bwd;
    r.prof.experts_fwd += p.experts_fwd;
    r.prof.slots += p.slots;
    r.prof.filled += p.filled;
    r.stats.merge(aux.stats);
    for (const auto& [name, st] : aux.stats.blocks)
      (name.rfind("decoder", 0) == 0 ? r.dec_visits : r.enc_visits) = st.requested_capacity();
  }
}

Batch random_batch(int64_t B, int64_t S, int64_t T, int64_t vocab, uint64_t seed) {
  // real tokens only (ids >= 4), </s> first in prev as the data pipeline does
  Tensor src = Tensor::uniform({B, S}, seed, 0, 4, double(vocab) - 1e-3, DType::F64);
  Tensor tgt = Tensor::uniform({B, T}, seed, 1, 4, double(vocab) - 1e-3, DType::F64);
  std::vector<int64_t> s, t, p;
  for (double v : src.to_vector<double>()) s.push_back(int64_t(v));
  for (double v : tgt.to_vector<double>()) t.push_back(int64_t(v));
  for (int64_t b = 0; b < B; ++b) {
    p.push_back(2);
    for (int64_t i = 0; i + 1 < T; ++i) p.push_back(t[size_t(b * T + i)]);
  }
  return {Tensor::from_vector(s, {B, S}), Tensor::from_vector(p, {B, T}), Tensor::from_vector(t, {B, T})};
}

double minimum(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Strata MoE training-step benchmark (dense vs MoE vs SMoE, routing overhead)"};
  int64_t tokens = 4096, seq = 32;
  int steps = 4;
  std::string models = "dense,moe,smoe2222,smoe44", routing_json;
  app.add_option("--tokens", tokens, "source tokens per update");
  app.add_option("--seq", seq, "sentence length (source and target)");
  app.add_option("--steps", steps, "timed updates per model (after one warm-up)");
  app.add_option("--models", models, "comma-separated: dense, moe, smoe2222, smoe44");
  app.add_option("--routing-json", routing_json,
                 "append each MoE model's routing statistics as a metrics.jsonl record (data_tools/plot_routing)");
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<Runner> runners;
    std::stringstream ss(models);
    for (std::string m; std::getline(ss, m, ',');) {
      Runner r;
      r.name = m;
      r.cfg = demo_config(m);
      r.model = model::build_model(r.cfg, r.cfg.model.vocab_size, 1);
      r.model->init_parameters(1);
      r.adam = std::make_unique<train::Adam>(r.model->named_parameters());
      runners.push_back(std::move(r));
    }
    const int64_t B = std::max<int64_t>(1, tokens / seq);
    std::vector<Batch> batches;
    for (int i = 0; i <= steps; ++i) batches.push_back(random_batch(B, seq, seq, 8000, uint64_t(100 + i)));
    for (int i = 0; i <= steps; ++i)
      for (Runner& r : runners) {
        if (i == 0) {  // warm-up: first touch of every buffer
          step(r, batches[0], 0);
          r.step_s.clear();
          r.cpu_s.clear();
          r.prof.reset();
          r.stats.clear();
          continue;
        }
        step(r, batches[size_t(i)], uint64_t(i));
      }
    const Runner* dense = nullptr;
    for (const Runner& r : runners)
      if (r.name == "dense") dense = &r;
    std::printf("batch %lld x %lld source / target tokens, %d timed steps (fastest), %d OpenMP threads\n",
                (long long)B, (long long)seq, steps, omp_get_max_threads());
    std::printf("%-9s %8s %9s %9s %8s %8s %8s %9s %8s %8s %8s %8s %9s\n", "model", "params", "step ms", "vs dense",
                "FLOPs x", "quotient", "RC enc", "RC dec", "routing", "gate", "disp", "comb", "experts");
    for (const Runner& r : runners) {
      const double t = minimum(r.step_s);
      const double fl = forward_flops(r.cfg, B, seq, seq, r.enc_visits, r.dec_visits);
      const double vs = dense ? t / minimum(dense->step_s) : 0;
      const double fx = dense ? fl / forward_flops(dense->cfg, B, seq, seq, 1, 1) : 0;
      double sum_steps = 0;
      for (double s : r.step_s) sum_steps += s;
      auto pct = [&](double x) { return 100.0 * x / sum_steps; };
      std::printf("%-9s %7.2fM %9.0f %9.3f %8.3f %8.3f %8.2f %9.2f %7.1f%% %7.1f%% %7.1f%% %7.1f%% %8.1f%%\n",
                  r.name.c_str(), r.model->num_parameters() / 1e6, 1e3 * t, vs, fx, fx > 0 ? vs / fx : 0,
                  r.enc_visits, r.dec_visits, pct(r.prof.routing()), pct(r.prof.gate_fwd + r.prof.gate_bwd),
                  pct(r.prof.dispatch_fwd + r.prof.dispatch_bwd), pct(r.prof.combine_fwd + r.prof.combine_bwd),
                  pct(r.prof.experts_fwd));
      if (r.cfg.moe.enabled())
        std::printf("          all-to-all copies %.1f%%, pass-loop row moves %.1f%% of the step; expert buffers %.0f%% filled; "
                    "step ms min %.0f median %.0f\n",
                    pct(r.prof.exchange_fwd + r.prof.exchange_bwd), pct(r.prof.rows_fwd + r.prof.rows_bwd),
                    r.prof.slots > 0 ? 100.0 * r.prof.filled / r.prof.slots : 0.0, 1e3 * minimum(r.step_s),
                    1e3 * median(r.step_s));
    }
    if (!routing_json.empty()) {
      std::ofstream f(routing_json, std::ios::app);
      STRATA_CHECK(f.good()) << "moe_step: cannot open " << routing_json;
      for (const Runner& r : runners) {
        if (!r.cfg.moe.enabled()) continue;
        nlohmann::json rec = moe::routing_stats_json(r.stats, {"de", "fr", "it", "nl"});
        rec["kind"] = "routing";
        rec["model"] = r.name;
        rec["update"] = 0;
        f << rec.dump() << "\n";
      }
    }
    std::printf("\nCPU time of the process per step (all threads; robust to other processes on the machine):\n");
    std::printf("%-9s %9s %9s %8s %8s\n", "model", "cpu ms", "vs dense", "FLOPs x", "quotient");
    for (const Runner& r : runners) {
      const double t = minimum(r.cpu_s);
      const double vs = dense ? t / minimum(dense->cpu_s) : 0;
      const double fx = dense ? forward_flops(r.cfg, B, seq, seq, r.enc_visits, r.dec_visits) /
                                    forward_flops(dense->cfg, B, seq, seq, 1, 1)
                              : 0;
      std::printf("%-9s %9.0f %9.3f %8.3f %8.3f\n", r.name.c_str(), 1e3 * t, vs, fx, fx > 0 ? vs / fx : 0);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_step: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
