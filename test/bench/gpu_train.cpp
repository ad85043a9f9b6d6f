// GPU training-step benchmark: target tokens/s and model FLOP utilisation of
// one full update (forward, label-smoothed loss plus the MoE aux loss,
// backward, Adam) of the paper's M4 models on one GPU, in bf16 autocast (or
// fp32), on synthetic batches of about --tokens target tokens.
//   build/bench/gpu_train [--configs dense,moe,smoe] [--steps 10] [--tokens 4096] [--precision bf16] [--json F]
//   build/bench/gpu_train --device cpu --precision fp32 --tokens 64 --steps 1 --set model.encoder_layers=1 ...
//     (the second form checks the benchmark itself on a machine without a GPU)
// The models come from the project's configs through the config loader:
//   dense  jobs/configs/m4_dense.yaml                  (transformer_base, 60.5M)
//   moe    jobs/configs/m4.yaml --set moe.experts=8     (top-2 MoE, 8 experts, 148.7M)
//   smoe   jobs/configs/m4_smoe.yaml                   (SMoE 2-2-2-2, 148.8M)
// (test/reference/gpu_train_torch.py builds the same three in PyTorch.)
// vocab_size 0 in a config (taken from the data) becomes --vocab (32000, the
// M4 SentencePiece vocabulary as docs/moe.md counts it). Dropout is as
// configured unless --set overrides it (the PyTorch comparison runs with
// --set model.dropout=0 --set model.attention_dropout=0: the reference model
// has no dropout).
//
// Batches: B = tokens / seq sentences of seq source and seq target tokens,
// random ids in [4, V) from a fixed seed, no padding; prev = </s> + target
// shifted. Timing: --warmup untimed updates, then --steps updates with a CUDA
// event on the compute stream before each and after the last (no host sync in
// between, so the host may run ahead exactly as in training). Model FLOPs per
// update = 3 x model::flops_per_token(cfg, V, context = seq) x target tokens
// (forward + backward; MoE blocks at their uniform-routing strata visits);
// MFU = model FLOP/s / the GEMM rate of the same dtype measured in the same
// run (backend::cuda::measure_gemm_tflops, 8192^3).
#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "strata/autograd/ops.h"
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/gemm.h"
#include "strata/config/config.h"
#include "strata/core/allocator.h"
#include "strata/model/build.h"
#include "strata/moe/aux_losses.h"
#include "strata/nn/autocast.h"
#include "strata/train/adam.h"
#include "strata/train/grad_clip.h"

using namespace strata;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kPad = 1, kEos = 2;

struct Preset {
  const char* name;
  const char* file;                    // under --config-dir
  std::vector<std::string> overrides;  // applied before the user's --set
  const char* what;
};

// Keep in step with PRESETS in test/reference/gpu_train_torch.py.
const std::vector<Preset>& presets() {
  static const std::vector<Preset> p{
      {"dense", "m4_dense.yaml", {}, "M4 dense (transformer_base)"},
      {"moe", "m4.yaml", {"moe.experts=8"}, "M4 top-2 MoE, 8 experts"},
      {"smoe", "m4_smoe.yaml", {}, "M4 SMoE 2-2-2-2"},
  };
  return p;
}

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : presets())
    if (name == p.name) return p;
  STRATA_CHECK(false) << "gpu_train: unknown config '" << name << "' (dense, moe, smoe)";
  return presets()[0];  // not reached
}

struct Batch {
  Tensor src, prev, target;  // on the GPU, i64
};

// Random real tokens (ids >= 4, never <pad>) so every position counts.
Batch random_batch(int64_t B, int64_t S, int64_t T, int64_t vocab, uint64_t seed, Device device) {
  Tensor src = Tensor::uniform({B, S}, seed, 0, 4, double(vocab) - 1e-3, DType::F64);
  Tensor tgt = Tensor::uniform({B, T}, seed, 1, 4, double(vocab) - 1e-3, DType::F64);
  std::vector<int64_t> s, t, p;
  for (double v : src.to_vector<double>()) s.push_back(int64_t(v));
  for (double v : tgt.to_vector<double>()) t.push_back(int64_t(v));
  for (int64_t b = 0; b < B; ++b) {
    p.push_back(kEos);
    for (int64_t i = 0; i + 1 < T; ++i) p.push_back(t[size_t(b * T + i)]);
  }
  return {Tensor::from_vector(s, {B, S}).to(device), Tensor::from_vector(p, {B, T}).to(device),
          Tensor::from_vector(t, {B, T}).to(device)};
}

// Step boundaries: CUDA events on the compute stream (no host sync between
// steps, so the host may run ahead exactly as in training), or the wall clock
// on the CPU (--device cpu: checks everything but the GPU).
class StepTimer {
 public:
  StepTimer(Device d, int steps) : cuda_(d.is_cuda()), events_(cuda_ ? size_t(steps) + 1 : 0) {
    for (auto& e : events_) STRATA_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~StepTimer() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;
  void mark() {  // before each step and after the last
    if (cuda_)
      STRATA_CUDA_CHECK(cudaEventRecord(events_[marks_], cuda::compute_stream()));
    else
      times_.push_back(Clock::now());
    ++marks_;
  }
  // Milliseconds of each step; waits for the last one.
  std::vector<double> step_ms() {
    std::vector<double> ms;
    if (cuda_) STRATA_CUDA_CHECK(cudaEventSynchronize(events_[marks_ - 1]));
    for (size_t i = 0; i + 1 < marks_; ++i) {
      if (cuda_) {
        float t = 0;
        STRATA_CUDA_CHECK(cudaEventElapsedTime(&t, events_[i], events_[i + 1]));
        ms.push_back(double(t));
      } else {
        ms.push_back(1e3 * std::chrono::duration<double>(times_[i + 1] - times_[i]).count());
      }
    }
    return ms;
  }

 private:
  bool cuda_;
  std::vector<cudaEvent_t> events_;
  std::vector<Clock::time_point> times_;
  size_t marks_ = 0;
};

struct Options {
  std::string config_dir = "jobs/configs";
  std::vector<std::string> sets;
  int64_t tokens = 4096, seq = 32, vocab = 32000;
  int steps = 10, warmup = 3;
  DType precision = DType::BF16;
  Device device = Device::cpu();  // set in main
};

struct Result {
  std::string name, what, file;
  int64_t params = 0, batch = 0, src_tokens = 0, tgt_tokens = 0;
  double fwd_flops_per_token = 0;
  double step_ms = 0, step_ms_min = 0, step_ms_median = 0, wall_step_ms = 0;
  double tokens_per_s = 0, model_tflops = 0, mfu = 0, peak_mem_gib = 0;
  double first_loss = 0, last_loss = 0;  // per target token, base e (a sanity check: finite)
};

// One update; returns the loss per target token (forces a host copy only when
// `read_loss`, i.e. outside the timed window).
double train_step(model::TransformerModel& m, train::Adam& adam, const config::Config& cfg, const Batch& b,
                  DType precision, uint64_t seed, bool read_loss) {
  const int64_t V = cfg.model.vocab_size;
  Generator gen(seed);
  nn::AuxLosses aux;
  nn::ForwardContext ctx{true, &gen, cfg.moe.enabled() ? &aux : nullptr};
  Tensor loss;
  int64_t tokens = 0;
  {
    // Forward, loss and backward in the compute dtype, as the trainer runs
    // them (src/train/trainer.cpp, train_update).
    nn::AutocastGuard autocast(precision);
    Tensor logits = m.forward(b.src, b.prev, ctx);
    const int64_t N = b.target.numel();
    CrossEntropyResult ce =
        label_smoothed_cross_entropy(reshape(logits, {N, V}), b.target.reshape({N}), cfg.train.label_smoothing, kPad,
                                     cfg.train.label_smoothing_form == config::SmoothingForm::Fairseq
                                         ? SmoothingForm::Fairseq
                                         : SmoothingForm::Moe);
    tokens = ce.tokens;
    loss = cfg.moe.enabled() ? ce.loss + moe::aux_loss_total(aux, ce.tokens, cfg.moe) : ce.loss;
    loss.backward();
  }
  train::scale_grads(m.parameters(), 1.0 / double(std::max<int64_t>(tokens, 1)));
  adam.step(1e-4);
  adam.zero_grad();
  if (!read_loss) return 0;
  return loss.to(Device::cpu()).item() / double(std::max<int64_t>(tokens, 1));
}

Result run(const std::string& name, const Options& o, double peak_tflops) {
  const Preset& p = find_preset(name);
  std::vector<std::string> sets = p.overrides;
  sets.insert(sets.end(), o.sets.begin(), o.sets.end());
  config::Config cfg = config::load_config(o.config_dir + "/" + p.file, sets);
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = int(o.vocab);
  const int64_t V = cfg.model.vocab_size;
  const int64_t B = std::max<int64_t>(1, o.tokens / o.seq);
  STRATA_CHECK(o.seq + 2 <= cfg.model.max_source_positions && o.seq + 2 <= cfg.model.max_target_positions)
      << "gpu_train: --seq " << o.seq << " exceeds the model's positions";

  auto model = model::build_model(cfg, V, kPad);
  model->init_parameters(uint64_t(cfg.train.seed));
  model->to(o.device);
  train::Adam adam(model->named_parameters());

  Result r;
  r.name = name;
  r.what = p.what;
  r.file = p.file;
  r.params = model->num_parameters();
  r.batch = B;
  r.src_tokens = B * o.seq;
  r.tgt_tokens = B * o.seq;
  r.fwd_flops_per_token = model::flops_per_token(cfg, V, o.seq);

  // A few distinct batches, made once (host-to-device copies stay out of the timing).
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) batches.push_back(random_batch(B, o.seq, o.seq, V, uint64_t(100 + i), o.device));

  Allocator& alloc = allocator_for(o.device);
  alloc.reset_peak();
  for (int i = 0; i < o.warmup; ++i) {
    const double l = train_step(*model, adam, cfg, batches[size_t(i) % batches.size()], o.precision, uint64_t(i),
                                i == 0);
    if (i == 0) r.first_loss = l;
  }
  if (o.device.is_cuda()) cuda::synchronize();

  StepTimer timer(o.device, o.steps);
  const auto t0 = Clock::now();
  for (int i = 0; i < o.steps; ++i) {
    timer.mark();
    train_step(*model, adam, cfg, batches[size_t(i + o.warmup) % batches.size()], o.precision,
               uint64_t(o.warmup + i), false);
  }
  timer.mark();
  const std::vector<double> ms = timer.step_ms();
  const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  double total_ms = 0;
  for (double m : ms) total_ms += m;
  r.peak_mem_gib = double(alloc.stats().peak_bytes_in_use) / double(1ull << 30);
  // one more update whose loss is read: the timed updates must not have diverged
  r.last_loss = train_step(*model, adam, cfg, batches[0], o.precision, uint64_t(o.warmup + o.steps), true);

  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  r.step_ms = total_ms / o.steps;
  r.step_ms_min = sorted.front();
  r.step_ms_median = sorted[sorted.size() / 2];
  r.wall_step_ms = 1e3 * wall_s / o.steps;
  r.tokens_per_s = double(r.tgt_tokens) / (r.step_ms / 1e3);
  r.model_tflops = 3.0 * r.fwd_flops_per_token * double(r.tgt_tokens) / (r.step_ms / 1e3) / 1e12;
  r.mfu = peak_tflops > 0 ? r.model_tflops / peak_tflops : 0;
  return r;
}

nlohmann::json to_json(const Result& r) {
  return {{"config", r.name},
          {"description", r.what},
          {"config_file", r.file},
          {"params", r.params},
          {"batch_sentences", r.batch},
          {"src_tokens", r.src_tokens},
          {"tgt_tokens", r.tgt_tokens},
          {"forward_flops_per_token", r.fwd_flops_per_token},
          {"step_ms", r.step_ms},
          {"step_ms_min", r.step_ms_min},
          {"step_ms_median", r.step_ms_median},
          {"wall_step_ms", r.wall_step_ms},
          {"tokens_per_s", r.tokens_per_s},
          {"model_tflops", r.model_tflops},
          {"mfu", r.mfu},
          {"peak_mem_gib", r.peak_mem_gib},
          {"first_loss", r.first_loss},
          {"last_loss", r.last_loss}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Strata GPU training-step benchmark (tokens/s and MFU of the M4 models)"};
  Options o;
  std::string configs = "dense,moe,smoe", precision = "bf16", device = "cuda", json_path;
  int gemm_iters = 20;
  app.add_option("--configs", configs, "comma-separated: dense, moe, smoe");
  app.add_option("--config-dir", o.config_dir, "where m4_dense.yaml, m4.yaml and m4_smoe.yaml are");
  app.add_option("--set", o.sets, "key=value applied to every config (after the preset's own), repeatable");
  app.add_option("--steps", o.steps, "timed updates per config")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "untimed updates first (allocator, cuBLASLt heuristics)")->check(CLI::PositiveNumber);
  app.add_option("--tokens", o.tokens, "target tokens per update (= source tokens)")->check(CLI::PositiveNumber);
  app.add_option("--seq", o.seq, "sentence length, source and target")->check(CLI::PositiveNumber);
  app.add_option("--vocab", o.vocab, "vocabulary size when a config says 0 (from the data)")->check(CLI::PositiveNumber);
  app.add_option("--precision", precision, "bf16 (autocast) or fp32");
  app.add_option("--device", device, "cuda, or cpu (fp32, no MFU: checks the benchmark itself without a GPU)");
  app.add_option("--gemm-iters", gemm_iters, "timed products of the 8192^3 GEMM peak")->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  try {
    STRATA_CHECK(precision == "bf16" || precision == "fp32")
        << "gpu_train: --precision must be bf16 or fp32, got '" << precision << "'";
    o.precision = precision == "bf16" ? DType::BF16 : DType::F32;
    STRATA_CHECK(device == "cuda" || device == "cpu") << "gpu_train: --device must be cuda or cpu, got '" << device << "'";
    std::string gpu_name = "cpu";
    double peak = 0;
    if (device == "cpu") {
      STRATA_CHECK(o.precision == DType::F32) << "gpu_train: --device cpu trains in fp32 (--precision fp32)";
      std::printf("device: cpu (a check of the benchmark itself; no GEMM peak, no MFU)\n");
    } else {
      if (!cuda::available()) {
        std::fprintf(stderr, "gpu_train: no CUDA device visible\n");
        return 1;
      }
      o.device = Device::cuda(cuda::context().device);
      cudaDeviceProp prop;
      STRATA_CUDA_CHECK(cudaGetDeviceProperties(&prop, cuda::context().device));
      gpu_name = prop.name;
      peak = backend::cuda::measure_gemm_tflops(o.precision, 8192, 8192, 8192, gemm_iters);
      std::printf("GPU: %s (%d SMs, cc %d.%d); %s GEMM 8192^3 (same run): %.1f TFLOP/s\n", prop.name,
                  cuda::context().sm_count, prop.major, prop.minor, precision.c_str(), peak);
    }
    std::printf("batch %lld x %lld source / target tokens, %d warm-up + %d timed updates%s\n",
                (long long)std::max<int64_t>(1, o.tokens / o.seq), (long long)o.seq, o.warmup, o.steps,
                o.sets.empty() ? "" : ", with --set overrides");
    for (const auto& s : o.sets) std::printf("  --set %s\n", s.c_str());
    std::printf("%-6s %9s %9s %9s %9s %12s %9s %7s %8s %13s\n", "config", "params", "tgt tok", "step ms",
                "min ms", "tgt tok/s", "TFLOP/s", "MFU", "mem GiB", "loss first>last");
    // Each config on its own: one that throws (or diverges) is reported and
    // the others still run; the JSON is rewritten after every config so that a
    // run stopped by a time limit keeps what it measured.
    std::vector<Result> results;
    std::vector<std::pair<std::string, std::string>> failed;  // config, why
    auto write_json = [&] {
      if (json_path.empty()) return;
      nlohmann::json j;
      j["benchmark"] = "gpu_train";
      j["gpu"] = gpu_name;
      j["device"] = device;
      j["precision"] = precision;
      j["gemm_tflops"] = peak;
      j["gemm_shape"] = "8192x8192x8192";
      j["tokens"] = o.tokens;
      j["seq"] = o.seq;
      j["warmup"] = o.warmup;
      j["steps"] = o.steps;
      j["set"] = o.sets;
      j["configs"] = nlohmann::json::array();
      for (const Result& r : results) j["configs"].push_back(to_json(r));
      j["failed"] = nlohmann::json::object();
      for (const auto& [name, why] : failed) j["failed"][name] = why;
      std::ofstream f(json_path);
      STRATA_CHECK(f.good()) << "gpu_train: cannot write " << json_path;
      f << j.dump(2) << "\n";
    };
    std::stringstream ss(configs);
    for (std::string name; std::getline(ss, name, ',');) {
      if (name.empty()) continue;
      try {
        Result r = run(name, o, peak);
        std::printf("%-6s %8.1fM %9lld %9.2f %9.2f %12.0f %9.1f %6.1f%% %8.2f %6.2f>%-6.2f\n", r.name.c_str(),
                    r.params / 1e6, (long long)r.tgt_tokens, r.step_ms, r.step_ms_min, r.tokens_per_s, r.model_tflops,
                    100 * r.mfu, r.peak_mem_gib, r.first_loss, r.last_loss);
        if (!std::isfinite(r.first_loss) || !std::isfinite(r.last_loss))
          failed.emplace_back(name, "the loss is not finite");  // timed all the same, but a bug
        results.push_back(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "gpu_train: %s: error: %s\n", name.c_str(), e.what());
        failed.emplace_back(name, e.what());
        // A sticky CUDA error (illegal address, launch failure) poisons the
        // context: later configs would only repeat it. (cudaGetLastError
        // clears an ordinary error such as out-of-memory; a sticky one stays.)
        if (o.device.is_cuda()) {
          (void)cudaGetLastError();
          if (cudaDeviceSynchronize() != cudaSuccess) {
            std::fprintf(stderr, "gpu_train: the CUDA context is unusable; skipping the remaining configs\n");
            write_json();
            return 1;
          }
        }
      }
      std::fflush(stdout);
      write_json();
    }
    for (const auto& [name, why] : failed) std::fprintf(stderr, "gpu_train: FAILED %s: %s\n", name.c_str(), why.c_str());
    if (!failed.empty()) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_train: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else  // built without CUDA: the Makefile builds every test/bench/*.cpp, so this still links

#include <cstdio>

int main() {
  std::printf("gpu_train: built without CUDA\n");
  return 1;
}

#endif
