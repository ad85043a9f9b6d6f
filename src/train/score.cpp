#include "strata/train/score.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "strata/autograd/ops.h"
#include "strata/config/config.h"
#include "strata/core/grad_mode.h"
#include "strata/model/build.h"
#include "strata/train/metrics.h"
#include "strata/train/safetensors.h"
#include "strata/train/task.h"

namespace strata::train {

namespace {
constexpr double kLn2 = 0.69314718055994530942;

SmoothingForm smoothing_form(config::SmoothingForm f) {
  return f == config::SmoothingForm::Moe ? SmoothingForm::Moe : SmoothingForm::Fairseq;
}

// -log softmax(logits)[target] per token, in double; 0 where target == pad.
// Per-token values let the reference see changes that the batch sum averages away.
Tensor per_token_nll(const Tensor& logits_in, const Tensor& target_in, int64_t pad) {
  Tensor logits = logits_in.to(Device::cpu()).to(DType::F64).contiguous();
  Tensor target = target_in.to(Device::cpu()).to(DType::I64).contiguous();
  const int64_t V = logits.size(-1), N = target.numel();
  Tensor out = Tensor::zeros(target.shape(), DType::F64);
  const double* x = logits.data<double>();
  const int64_t* t = target.data<int64_t>();
  double* o = out.data<double>();
  for (int64_t i = 0; i < N; ++i) {
    if (t[i] == pad) continue;
    const double* row = x + i * V;
    double mx = row[0], se = 0;
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
    for (int64_t v = 0; v < V; ++v) se += std::exp(row[v] - mx);
    o[i] = std::log(se) + mx - row[t[i]];
  }
  return out;
}

}  // namespace

void LossSums::add(const LossSums& o) {
  loss_sum += o.loss_sum;
  nll_sum += o.nll_sum;
  tokens += o.tokens;
  sentences += o.sentences;
}

double LossSums::loss_bits() const { return tokens > 0 ? loss_sum / double(tokens) / kLn2 : 0.0; }
double LossSums::nll_bits() const { return tokens > 0 ? nll_sum / double(tokens) / kLn2 : 0.0; }

LossSums score_batch(model::TransformerModel& model, const data::Batch& b, const config::Config& cfg,
                     Tensor* token_nll) {
  NoGradGuard ng;
  nn::ForwardContext ctx;  // training = false: every dropout is the identity
  Tensor logits = model.forward(b.src, b.prev, ctx);
  const int64_t N = b.target.numel(), V = model.vocab_size();
  // The model takes host ids; the loss needs the target where the logits are.
  const Tensor target = b.target.to(logits.device());
  CrossEntropyResult ce = label_smoothed_cross_entropy(reshape(logits, {N, V}), target.reshape({N}),
                                                       cfg.train.label_smoothing, model.padding_idx(),
                                                       smoothing_form(cfg.train.label_smoothing_form));
  LossSums s;
  s.loss_sum = ce.loss.item();
  s.nll_sum = ce.nll.item();
  s.tokens = ce.tokens;
  s.sentences = b.size();
  if (token_nll) *token_nll = per_token_nll(logits, b.target, model.padding_idx());
  return s;
}

void write_batch_dump(const std::string& dir, const data::Batch& b, const LossSums& sums, const Tensor& token_nll,
                      const config::Config& cfg, const std::string& direction, const std::string& split) {
  STRATA_CHECK(token_nll.defined() && token_nll.shape() == b.target.shape())
      << "strata-score: per-token NLL " << (token_nll.defined() ? token_nll.str() : "undefined")
      << " does not match the target " << b.target.str();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  STRATA_CHECK(!ec) << "strata-score: cannot create " << dir << ": " << ec.message();
  save_safetensors(dir + "/batch.safetensors",
                   NamedTensors{{"src", b.src.to(DType::I64)},
                                {"prev", b.prev.to(DType::I64)},
                                {"target", b.target.to(DType::I64)},
                                {"token_nll", token_nll.to(DType::F64)}},
                   {{"format", "strata-batch"}, {"direction", direction}, {"split", split}});
  nlohmann::json j;
  j["loss_sum"] = sums.loss_sum;
  j["nll_sum"] = sums.nll_sum;
  j["tokens"] = sums.tokens;
  j["sentences"] = sums.sentences;
  j["label_smoothing"] = cfg.train.label_smoothing;
  j["smoothing_form"] = config::to_string(cfg.train.label_smoothing_form);
  j["padding_idx"] = data::kPadId;
  j["vocab_size"] = cfg.model.vocab_size;
  j["direction"] = direction;
  j["split"] = split;
  const std::string path = dir + "/strata_loss.json";
  std::ofstream f(path);
  STRATA_CHECK(f.good()) << "strata-score: cannot write " << path;
  f << j.dump(2) << "\n";
  STRATA_CHECK(f.good()) << "strata-score: error writing " << path;
}

ScoreReport score_split(LoadedModel& m, const std::string& split_in, const std::string& dump_dir) {
  ScoreReport r;
  r.split = split_in.empty() ? m.config.data.valid_subset : split_in;
  data::TranslationBatches batches(open_directions(m.config, *m.vocab, r.split), batch_options(m.config));
  for (size_t d = 0; d < batches.directions().size(); ++d) {
    DirectionScore ds;
    ds.name = batches.directions()[d].name();
    bool first = true;
    for (const auto& refs : batches.ordered_plan(d)) {
      data::Batch b = batches.make_batch(refs);
      const bool dump = first && d == 0 && !dump_dir.empty();
      Tensor token_nll;
      LossSums s = score_batch(*m.model, b, m.config, dump ? &token_nll : nullptr);
      if (dump) write_batch_dump(dump_dir, b, s, token_nll, m.config, ds.name, r.split);
      first = false;
      ds.sums.add(s);
    }
    r.total.add(ds.sums);
    r.directions.push_back(std::move(ds));
  }
  return r;
}

void print_report(std::ostream& os, const ScoreReport& r) {
  auto line = [&](const std::string& name, const LossSums& s) {
    std::ostringstream l;
    l.setf(std::ios::fixed);
    l << r.split << " " << std::left << std::setw(7) << name << std::right << " | sentences " << s.sentences
      << " | tokens " << s.tokens << std::setprecision(6) << " | loss " << s.loss_bits() << " | nll " << s.nll_bits()
      << std::setprecision(2) << " | ppl " << perplexity(s.nll_bits());
    os << l.str() << "\n";
  };
  for (const auto& d : r.directions) line(d.name, d.sums);
  line("total", r.total);
}

namespace {
void usage(std::ostream& os) {
  os << "usage: strata-score CHECKPOINT [--set key=value ...] [--split NAME] [--dump-batch OUT_DIR]\n"
        "  Loads a checkpoint directory (or a save_dir: its checkpoint_best, else checkpoint_last) and prints\n"
        "  the label-smoothed loss and the NLL (base 2, per target token) of every direction of a split,\n"
        "  with dropout off, as the trainer's validation computes them.\n"
        "  --set key=value   override a config key (e.g. data.data_dir=DIR when the data moved)\n"
        "  --split NAME      the split to score (default: the config's valid_subset)\n"
        "  --dump-batch DIR  also write DIR/batch.safetensors and DIR/strata_loss.json for the first batch\n"
        "                    of the first direction (input of test/reference/strata_reference.py)\n";
}
}  // namespace

int score_main(int argc, const char* const* argv) {
  try {
    std::vector<const char*> args;
    std::string split, dump_dir;
    for (int i = 0; i < argc; ++i) {
      const bool has_value = i + 1 < argc;
      if (i > 0 && std::strcmp(argv[i], "--split") == 0) {
        if (!has_value) STRATA_FAIL() << "--split needs a split name";
        split = argv[++i];
      } else if (i > 0 && std::strcmp(argv[i], "--dump-batch") == 0) {
        if (!has_value) STRATA_FAIL() << "--dump-batch needs an output directory";
        dump_dir = argv[++i];
      } else {
        args.push_back(argv[i]);
      }
    }
    config::CommandLine cl = config::parse_command_line(int(args.size()), args.data());
    if (cl.help) {
      usage(std::cout);
      return 0;
    }
    // The shared parser calls the first positional the config path; here it is the checkpoint.
    if (cl.config_path.empty() || !cl.positionals.empty()) {
      usage(std::cerr);
      return 2;
    }
    LoadedModel m = load_model(cl.config_path, cl.overrides);
    std::cout << "checkpoint: " << resolve_checkpoint(cl.config_path) << " | " << model::summarize(m.config, m.model->vocab_size()).str()
              << "\n";
    ScoreReport r = score_split(m, split, dump_dir);
    print_report(std::cout, r);
    if (!dump_dir.empty()) std::cout << "batch dump: " << dump_dir << "/batch.safetensors, strata_loss.json\n";
    std::cout.flush();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "strata-score: error: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace strata::train
