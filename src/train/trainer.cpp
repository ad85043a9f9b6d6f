#include "strata/train/trainer.h"

#include <chrono>
#include <filesystem>
#include <cmath>
#include <fstream>
#include <ostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "strata/autograd/ops.h"
#include "strata/config/config.h"
#include "strata/core/grad_mode.h"
#include "strata/decode/translator.h"
#include "strata/eval/bleu.h"
#include "strata/eval/chrf.h"
#include "strata/model/build.h"
#include "strata/train/checkpoint.h"
#include "strata/train/grad_clip.h"
#include "strata/train/metrics.h"
#include "strata/train/safetensors.h"
#include "strata/train/task.h"

namespace strata::train {

namespace {
constexpr double kLn2 = 0.69314718055994530942;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

SmoothingForm smoothing_form(config::SmoothingForm f) {
  return f == config::SmoothingForm::Moe ? SmoothingForm::Moe : SmoothingForm::Fairseq;
}

std::string state_to_yaml(const TrainerState& s) {
  YAML::Emitter e;
  e.SetDoublePrecision(17);
  e << YAML::BeginMap;
  e << YAML::Key << "update" << YAML::Value << s.update;
  e << YAML::Key << "epoch" << YAML::Value << s.epoch;
  e << YAML::Key << "batch_in_epoch" << YAML::Value << s.batch_in_epoch;
  e << YAML::Key << "has_best" << YAML::Value << s.has_best;
  e << YAML::Key << "best_metric" << YAML::Value << s.best_metric;
  e << YAML::Key << "best_update" << YAML::Value << s.best_update;
  e << YAML::Key << "stalls" << YAML::Value << s.stalls;
  e << YAML::Key << "train_seconds" << YAML::Value << s.train_seconds;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

TrainerState state_from_yaml(const std::string& path) {
  TrainerState s;
  try {
    YAML::Node n = YAML::LoadFile(path);
    s.update = n["update"].as<int64_t>();
    s.epoch = n["epoch"].as<int64_t>();
    s.batch_in_epoch = n["batch_in_epoch"].as<int64_t>();
    s.has_best = n["has_best"].as<bool>();
    s.best_metric = n["best_metric"].as<double>();
    s.best_update = n["best_update"].as<int64_t>();
    s.stalls = n["stalls"].as<int64_t>();
    s.train_seconds = n["train_seconds"].as<double>();
  } catch (const YAML::Exception& e) {
    STRATA_FAIL() << path << ": unreadable trainer state (" << e.what() << ")";
  }
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  STRATA_CHECK(f.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

Trainer::Trainer(config::Config cfg, std::ostream& log) : cfg_(std::move(cfg)), log_(log) { setup(); }
Trainer::~Trainer() = default;

void Trainer::setup() {
  vocab_ = load_vocabulary(cfg_.data);
  int64_t V = vocab_->size();
  STRATA_CHECK(cfg_.model.vocab_size == 0 || cfg_.model.vocab_size == V)
      << "config: vocab_size is " << cfg_.model.vocab_size << " but the vocabulary holds " << V << " symbols";
  cfg_.model.vocab_size = int(V);
  data::BatchOptions bo = batch_options(cfg_);
  train_ = std::make_unique<data::TranslationBatches>(open_directions(cfg_, *vocab_, cfg_.data.train_subset), bo);
  if (cfg_.train.validate_interval_updates > 0)
    valid_ = std::make_unique<data::TranslationBatches>(open_directions(cfg_, *vocab_, cfg_.data.valid_subset), bo);
  model_ = model::build_model(cfg_, V, vocab_->pad());
  model_->init_parameters(uint64_t(cfg_.train.seed));
  AdamOptions ao;
  ao.beta1 = cfg_.train.adam_beta1;
  ao.beta2 = cfg_.train.adam_beta2;
  ao.eps = cfg_.train.adam_eps;
  ao.weight_decay = cfg_.train.weight_decay;
  adam_ = std::make_unique<Adam>(model_->named_parameters(), ao);
  LrScheduleOptions lo;
  lo.lr = cfg_.train.lr;
  lo.warmup_updates = cfg_.train.warmup_updates;
  lo.warmup_init_lr = cfg_.train.warmup_init_lr;
  schedule_ = std::make_unique<LrSchedule>(lo);

  log_ << "model: " << model::summarize(cfg_, V).str() << "\n";
  log_ << "vocabulary: " << V << " symbols\n";
  for (size_t d = 0; d < train_->directions().size(); ++d) {
    const auto& dir = train_->directions()[d];
    log_ << "train " << dir.name() << ": " << dir.data.size() << " sentences";
    if (train_->skipped()[d] > 0) log_ << " (" << train_->skipped()[d] << " over the length limits skipped)";
    log_ << "\n";
  }
  STRATA_CHECK(model_->num_parameters() == model::count_parameters(cfg_, V))
      << "model: parameter count " << model_->num_parameters() << " differs from the formula "
      << model::count_parameters(cfg_, V);
}

std::vector<data::ExampleRef> Trainer::next_batch() {
  if (plan_epoch_ != state_.epoch) {
    plan_ = train_->epoch_plan(state_.epoch);
    plan_epoch_ = state_.epoch;
  }
  if (state_.batch_in_epoch >= int64_t(plan_.size())) {
    ++state_.epoch;
    state_.batch_in_epoch = 0;
    plan_ = train_->epoch_plan(state_.epoch);
    plan_epoch_ = state_.epoch;
  }
  return plan_[size_t(state_.batch_in_epoch++)];
}

UpdateStats Trainer::train_update() {
  UpdateStats st;
  Generator gen(mix_keys(uint64_t(cfg_.train.seed), uint64_t(state_.update)));
  nn::ForwardContext ctx{true, &gen, nullptr};
  const int64_t V = model_->vocab_size();
  for (int k = 0; k < cfg_.train.update_freq; ++k) {
    data::Batch b = train_->make_batch(next_batch());
    Tensor logits = model_->forward(b.src, b.prev, ctx);
    const int64_t N = b.target.numel();
    CrossEntropyResult ce =
        label_smoothed_cross_entropy(reshape(logits, {N, V}), b.target.reshape({N}), cfg_.train.label_smoothing,
                                     vocab_->pad(), smoothing_form(cfg_.train.label_smoothing_form));
    ce.loss.backward();
    st.loss_sum += ce.loss.item();
    st.nll_sum += ce.nll.item();
    st.tokens += ce.tokens;
  }
  // fairseq normalises the summed gradients by the number of target tokens
  std::vector<Tensor> params = model_->parameters();
  scale_grads(params, 1.0 / double(std::max<int64_t>(st.tokens, 1)));
  st.grad_norm = clip_grad_norm(params, cfg_.train.clip_norm);
  STRATA_CHECK(std::isfinite(st.grad_norm))
      << "training diverged at update " << state_.update + 1 << ": gradient norm is " << st.grad_norm
      << " (loss " << st.loss_sum / std::max<int64_t>(st.tokens, 1) << "); lower lr or enable clip_norm";
  adam_->step(schedule_->lr_at(state_.update));
  adam_->zero_grad();
  ++state_.update;
  if (on_update) on_update(state_.update, st);
  return st;
}

ValidationResult Trainer::validate() {
  ValidationResult r;
  if (!valid_) return r;
  NoGradGuard ng;
  nn::ForwardContext ctx;  // evaluation: no dropout
  const int64_t V = model_->vocab_size();
  double loss = 0, nll = 0;
  std::vector<std::string> all_hyps;
  std::vector<std::string> all_refs;
  for (size_t d = 0; d < valid_->directions().size(); ++d) {
    const data::Direction& dir = valid_->directions()[d];
    double dl = 0;
    int64_t dt = 0;
    for (const auto& refs : valid_->ordered_plan(d)) {
      data::Batch b = valid_->make_batch(refs);
      Tensor logits = model_->forward(b.src, b.prev, ctx);
      const int64_t N = b.target.numel();
      CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {N, V}), b.target.reshape({N}),
                                                           cfg_.train.label_smoothing, vocab_->pad(),
                                                           smoothing_form(cfg_.train.label_smoothing_form));
      dl += ce.loss.item();
      nll += ce.nll.item();
      dt += ce.tokens;
    }
    loss += dl;
    r.tokens += dt;
    r.direction_loss.emplace_back(dir.name(), dl / double(std::max<int64_t>(dt, 1)) / kLn2);

    int64_t n = cfg_.train.valid_bleu_sentences;
    if (n == 0) continue;
    if (n < 0 || n > int64_t(dir.data.size())) n = int64_t(dir.data.size());
    std::vector<std::vector<int32_t>> sources;
    std::vector<std::string> refs;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> s = dir.data.src->get(size_t(i));
      if (!s.empty() && s.back() == vocab_->eos()) s.pop_back();
      sources.push_back(std::move(s));
      refs.push_back(vocab_->decode(dir.data.tgt->get(size_t(i))));
    }
    decode::TranslateOptions topt;
    topt.search.beam = cfg_.decode.beam;
    topt.search.lenpen = cfg_.decode.lenpen;
    topt.search.max_len_a = cfg_.decode.max_len_a;
    topt.search.max_len_b = cfg_.decode.max_len_b;
    topt.encoder_langtok = cfg_.data.encoder_langtok == config::LangtokMode::Tgt;
    topt.decoder_langtok = cfg_.data.decoder_langtok;
    auto hyps = decode::translate_ids(*model_, *vocab_, sources, dir.tgt_lang_id, topt, cfg_.data.max_tokens);
    std::vector<std::string> texts;
    for (auto& h : hyps) {
      std::vector<int32_t> ids;
      if (!h.empty())
        for (int64_t t : h[0].tokens) ids.push_back(int32_t(t));
      texts.push_back(vocab_->decode(ids));
    }
    r.direction_bleu.emplace_back(dir.name(), eval::corpus_bleu(texts, {refs}).score);
    all_hyps.insert(all_hyps.end(), texts.begin(), texts.end());
    all_refs.insert(all_refs.end(), refs.begin(), refs.end());
  }
  r.loss = loss / double(std::max<int64_t>(r.tokens, 1)) / kLn2;
  r.nll = nll / double(std::max<int64_t>(r.tokens, 1)) / kLn2;
  if (!all_hyps.empty()) {
    r.bleu = eval::corpus_bleu(all_hyps, {all_refs}).score;
    r.chrf = eval::corpus_chrf(all_hyps, {all_refs}).score;
  }
  return r;
}

bool Trainer::better(double metric) const {
  if (!state_.has_best) return true;
  return cfg_.train.maximize_best_metric() ? metric > state_.best_metric : metric < state_.best_metric;
}

void Trainer::save_checkpoint(const ValidationResult* valid) {
  const std::string& dir = cfg_.train.save_dir;
  {
    CheckpointWriter w(dir, "checkpoint_last");
    w.write_safetensors("model.safetensors", model_->named_parameters());
    w.write_safetensors("optimizer.safetensors", adam_->state_dict());
    w.write_text("trainer_state.yaml", state_to_yaml(state_));
    w.write_text("config.yaml", config::to_yaml(cfg_));
    w.commit();
  }
  if (valid && state_.best_update == state_.update) copy_checkpoint(dir, "checkpoint_last", "checkpoint_best");
  if (cfg_.train.save_interval_updates > 0 && state_.update % cfg_.train.save_interval_updates == 0 &&
      cfg_.train.keep_last != 0) {
    copy_checkpoint(dir, "checkpoint_last", periodic_checkpoint_name(state_.update));
    if (cfg_.train.keep_last > 0) prune_periodic_checkpoints(dir, cfg_.train.keep_last);
  }
}

void Trainer::try_resume() {
  const std::string& dir = cfg_.train.save_dir;
  recover_save_dir(dir);
  std::optional<std::string> last = find_resumable(dir);
  if (!last) return;
  config::Config saved = config::load_config_string(read_file(*last + "/config.yaml"), *last + "/config.yaml");
  config::check_resume_compatible(saved, cfg_, *last);
  model_->load_parameters(load_safetensors(*last + "/model.safetensors").tensors, *last + "/model.safetensors");
  adam_->load_state_dict(load_safetensors(*last + "/optimizer.safetensors").tensors);
  state_ = state_from_yaml(*last + "/trainer_state.yaml");
  log_ << "resumed from " << *last << " at update " << state_.update << " (epoch " << state_.epoch << ")\n";
}

int64_t Trainer::run() {
  std::error_code ec;
  std::filesystem::create_directories(cfg_.train.save_dir, ec);
  STRATA_CHECK(!ec) << "cannot create save_dir '" << cfg_.train.save_dir << "': " << ec.message();
  try_resume();
  const std::string metrics_path = cfg_.train.save_dir + "/metrics.jsonl";
  rewind_metrics(metrics_path, state_.update);
  MetricsWriter metrics(metrics_path);
  const int64_t start_update = state_.update;
  const double start_train_seconds = state_.train_seconds;
  const auto t0 = Clock::now();
  auto interval_start = Clock::now();
  double int_loss = 0, int_nll = 0;
  int64_t int_tokens = 0, int_updates = 0, last_saved = state_.update;
  bool stop = false;

  while (!stop) {
    if (cfg_.train.max_update > 0 && state_.update >= cfg_.train.max_update) break;
    if (stop_requested_) break;
    UpdateStats st = train_update();
    state_.train_seconds = start_train_seconds + seconds_since(t0);
    int_loss += st.loss_sum;
    int_nll += st.nll_sum;
    int_tokens += st.tokens;
    ++int_updates;
    if (cfg_.train.max_epoch > 0 && state_.epoch > cfg_.train.max_epoch) stop = true;
    if (cfg_.train.max_time_minutes > 0 && state_.train_seconds >= cfg_.train.max_time_minutes * 60) stop = true;
    const bool last = stop || (cfg_.train.max_update > 0 && state_.update >= cfg_.train.max_update);

    if (state_.update % std::max(1, cfg_.train.log_interval) == 0 || last) {
      ProgressInfo p;
      p.epoch = state_.epoch;
      p.update = state_.update;
      p.max_update = cfg_.train.max_update;
      p.start_update = start_update;
      p.loss = int_loss / double(std::max<int64_t>(int_tokens, 1)) / kLn2;
      p.ppl = perplexity(p.loss);
      p.lr = schedule_->lr_at(state_.update);
      p.tokens_per_sec = double(int_tokens) / std::max(1e-9, seconds_since(interval_start));
      p.elapsed_s = seconds_since(t0);
      log_ << format_progress(p) << std::endl;
      nlohmann::json rec = progress_record(p);
      rec["kind"] = "train";
      rec["nll"] = int_nll / double(std::max<int64_t>(int_tokens, 1)) / kLn2;
      rec["grad_norm"] = st.grad_norm;
      rec["updates_in_interval"] = int_updates;
      metrics.write(rec);
      int_loss = int_nll = 0;
      int_tokens = int_updates = 0;
      interval_start = Clock::now();
    }

    const bool do_valid =
        valid_ && ((cfg_.train.validate_interval_updates > 0 && state_.update % cfg_.train.validate_interval_updates == 0) || last);
    const bool do_save =
        (cfg_.train.save_interval_updates > 0 && state_.update % cfg_.train.save_interval_updates == 0) || last ||
        do_valid;
    ValidationResult v;
    if (do_valid) {
      auto tv = Clock::now();
      v = validate();
      double metric = v.loss;
      switch (cfg_.train.best_checkpoint_metric) {
        case config::BestMetric::Loss: metric = v.loss; break;
        case config::BestMetric::Nll: metric = v.nll; break;
        case config::BestMetric::Chrf: metric = v.chrf; break;
        default: metric = v.bleu; break;
      }
      if (better(metric)) {
        state_.has_best = true;
        state_.best_metric = metric;
        state_.best_update = state_.update;
        state_.stalls = 0;
      } else {
        ++state_.stalls;
      }
      std::ostringstream line;
      line.setf(std::ios::fixed);
      line.precision(3);
      line << "valid | update " << state_.update << " | loss " << v.loss << " | nll " << v.nll << " | ppl "
           << perplexity(v.nll);
      if (v.bleu >= 0) line << " | bleu " << v.bleu << " | chrf " << v.chrf;
      line << " | best " << state_.best_metric << " (update " << state_.best_update << ")"
           << " | " << format_duration(seconds_since(tv));
      log_ << line.str() << std::endl;
      nlohmann::json rec;
      rec["kind"] = "valid";
      rec["update"] = state_.update;
      rec["loss"] = v.loss;
      rec["nll"] = v.nll;
      rec["ppl"] = perplexity(v.nll);
      if (v.bleu >= 0) rec["bleu"] = v.bleu, rec["chrf"] = v.chrf;
      for (auto& [name, l] : v.direction_loss) rec["loss_" + name] = l;
      for (auto& [name, b] : v.direction_bleu) rec["bleu_" + name] = b;
      rec["best"] = state_.best_metric;
      metrics.write(rec);
      if (cfg_.train.patience > 0 && state_.stalls >= cfg_.train.patience) {
        log_ << "early stop: no improvement in " << state_.stalls << " validations\n";
        stop = true;
      }
    }
    if (do_save || stop) {
      save_checkpoint(do_valid ? &v : nullptr);
      last_saved = state_.update;
    }
  }
  if (last_saved != state_.update) save_checkpoint(nullptr);
  return state_.update;
}

}  // namespace strata::train
