// The registrations: every option's key, help text and value check, next to
// the field it binds. Aliases accept the SMoE reference's fairseq spelling
// (moe_expert_count, hmoe_dynamic, ...) so its users can keep their habits.
#include "strata/config/options.h"

#include "strata/config/registry.h"
#include "strata/core/error.h"

namespace strata::config {
namespace {

template <class E>
using Names = std::vector<std::pair<std::string, E>>;

// The first name of each value is canonical; later ones are accepted spellings.
const Names<MoEType>& names(MoEType*) {
  static const Names<MoEType> n{{"base", MoEType::Base}, {"eom", MoEType::Eom}, {"cmr", MoEType::Cmr}};
  return n;
}
const Names<SecondExpertPolicy>& names(SecondExpertPolicy*) {
  static const Names<SecondExpertPolicy> n{{"sampling", SecondExpertPolicy::Sampling},
                                           {"argmax", SecondExpertPolicy::Argmax},
                                           {"random", SecondExpertPolicy::Random},
                                           {"all", SecondExpertPolicy::Argmax}};  // fairseq's name
  return n;
}
const Names<SmoeResidual>& names(SmoeResidual*) {
  static const Names<SmoeResidual> n{{"code", SmoeResidual::Code}, {"paper", SmoeResidual::Paper}};
  return n;
}
const Names<DataFormat>& names(DataFormat*) {
  static const Names<DataFormat> n{{"strata", DataFormat::Strata}, {"fairseq", DataFormat::Fairseq}};
  return n;
}
const Names<LangtokMode>& names(LangtokMode*) {
  static const Names<LangtokMode> n{{"tgt", LangtokMode::Tgt}, {"src", LangtokMode::Src}, {"none", LangtokMode::None}};
  return n;
}
const Names<SmoothingForm>& names(SmoothingForm*) {
  static const Names<SmoothingForm> n{{"moe", SmoothingForm::Moe}, {"fairseq", SmoothingForm::Fairseq}};
  return n;
}
const Names<BestMetric>& names(BestMetric*) {
  static const Names<BestMetric> n{{"loss", BestMetric::Loss},
                                   {"nll", BestMetric::Nll},
                                   {"bleu", BestMetric::Bleu},
                                   {"spbleu", BestMetric::SpBleu},
                                   {"chrf", BestMetric::Chrf}};
  return n;
}
const Names<Precision>& names(Precision*) {
  static const Names<Precision> n{{"fp32", Precision::Fp32}, {"bf16", Precision::Bf16}, {"fp16", Precision::Fp16}};
  return n;
}
const Names<DeviceChoice>& names(DeviceChoice*) {
  static const Names<DeviceChoice> n{
      {"auto", DeviceChoice::Auto}, {"cpu", DeviceChoice::Cpu}, {"cuda", DeviceChoice::Cuda}, {"gpu", DeviceChoice::Cuda}};
  return n;
}

template <class E>
const char* name_of(E v) {
  for (const auto& [name, value] : names(static_cast<E*>(nullptr)))
    if (value == v) return name.c_str();
  return "?";
}

template <class E>
Option& choice(OptionRegistry& r, const std::string& key, E& field, const std::string& help) {
  return r.add_choice(key, field, names(static_cast<E*>(nullptr)), help);
}

const Check<double> kProbability = in_range(0.0, 1.0, false);  // dropout-like rates

}  // namespace

const char* to_string(MoEType v) { return name_of(v); }
const char* to_string(SecondExpertPolicy v) { return name_of(v); }
const char* to_string(SmoeResidual v) { return name_of(v); }
const char* to_string(DataFormat v) { return name_of(v); }
const char* to_string(LangtokMode v) { return name_of(v); }
const char* to_string(SmoothingForm v) { return name_of(v); }
const char* to_string(BestMetric v) { return name_of(v); }
const char* to_string(Precision v) { return name_of(v); }
const char* to_string(DeviceChoice v) { return name_of(v); }

void describe(OptionRegistry& r, ModelOptions& o) {
  r.section("model", "encoder-decoder transformer (pre-LN, sinusoidal positions, ReLU)");
  r.add("encoder_layers", o.encoder_layers, "number of encoder layers", positive<int>()).arch();
  r.add("decoder_layers", o.decoder_layers, "number of decoder layers", positive<int>()).arch();
  r.add("embed_dim", o.embed_dim, "model width d (embeddings, attention, residual stream)", positive<int>()).arch();
  r.add("ffn_dim", o.ffn_dim, "hidden width of the dense FFN and of every expert", positive<int>()).arch();
  r.add("attention_heads", o.attention_heads, "attention heads; must divide embed_dim", positive<int>()).arch();
  r.add("dropout", o.dropout, "dropout on sub-block outputs and embeddings (also inside experts)", kProbability);
  r.add("attention_dropout", o.attention_dropout, "dropout on attention probabilities", kProbability);
  r.add("activation_dropout", o.activation_dropout, "dropout after the FFN activation", kProbability);
  r.add("share_all_embeddings", o.share_all_embeddings,
        "tie encoder input, decoder input and output projection (needs one joint vocabulary)")
      .arch();
  r.add("max_source_positions", o.max_source_positions, "longest source the model accepts (tokens)", positive<int>())
      .arch();
  r.add("max_target_positions", o.max_target_positions, "longest target the model accepts (tokens)", positive<int>())
      .arch();
  r.add("vocab_size", o.vocab_size, "vocabulary size; 0 = from the data (SentencePiece model or dict.txt)",
        non_negative<int>())
      .arch();
  r.add("layernorm_eps", o.layernorm_eps, "epsilon of every LayerNorm", positive<double>());
  r.alias("encoder_embed_dim", "embed_dim");
  r.alias("encoder_ffn_embed_dim", "ffn_dim");
  r.alias("encoder_attention_heads", "attention_heads");
  r.alias("relu_dropout", "activation_dropout");
}

void describe(OptionRegistry& r, MoEOptions& o) {
  r.section("moe", "mixture-of-experts and stratified MoE (SMoE) blocks");
  choice(r, "moe_type", o.moe_type, "base = plain (S)MoE, eom = expert output masking, cmr = CMR (one stratum only)")
      .arch();
  r.add("experts", o.experts, "experts per MoE block; 0 = dense model", non_negative<int>()).arch();
  r.add("strata", o.strata,
        "experts per stratum, e.g. 4,4,8 (sums to experts); one entry = vanilla MoE; empty = [experts]",
        each(positive<int>()))
      .arch();
  r.add("moe_freq", o.moe_freq, "every moe_freq-th FFN is an MoE block ((i+1) % freq == 0)", positive<int>()).arch();
  r.add("encoder_moe_freq", o.encoder_moe_freq, "moe_freq for the encoder; -1 = moe_freq, 0 = dense encoder",
        at_least(-1))
      .arch();
  r.add("decoder_moe_freq", o.decoder_moe_freq, "moe_freq for the decoder; -1 = moe_freq, 0 = dense decoder",
        at_least(-1))
      .arch();
  r.add("top1", o.top1, "top-1 gate (Switch) instead of top-2");
  choice(r, "second_expert_policy", o.second_expert_policy,
         "second expert of top-2: Gumbel-noised argmax, plain argmax, or fairseq's random keep");
  r.add("capacity_factor", o.capacity_factor, "training capacity = ceil(factor * k * ceil(S/V)), k = 1 or 2",
        positive<double>());
  r.add("eval_capacity_token_fraction", o.eval_capacity_token_fraction,
        "validation capacity = ceil(f * S); negative = the training capacity",
        Check<double>{"other than 0", [](const double& v) { return v != 0.0; }});
  r.add("normalize_gate_prob_before_dropping", o.normalize_gate_prob_before_dropping,
        "renormalise the top-2 weights before capacity dropping instead of after");
  r.add("eom_rate", o.eom_rate, "expert output masking probability (moe_type eom)", kProbability);
  r.add("cmr_gate_dropout", o.cmr_gate_dropout, "dropout on the CMR gate value (moe_type cmr)", kProbability);
  r.add("cmr_target", o.cmr_target, "CMR loss target p in |mean(gate) - p|", in_range(0.0, 1.0, true));
  r.add("cmr_loss_weight", o.cmr_loss_weight, "weight of the CMR loss (times ntokens)", non_negative<double>());
  r.add("gate_loss_weight", o.gate_loss_weight, "weight of the balance loss (times ntokens)", non_negative<double>());
  r.add("z_loss_weight", o.z_loss_weight, "weight of the router z-loss (not in the reference)", non_negative<double>());
  r.add("balance_loss_ignore_padding", o.balance_loss_ignore_padding,
        "leave PAD tokens and buffer padding out of the balance loss (deviation from the reference)");
  choice(r, "smoe_residual", o.smoe_residual,
         "residual base at strata >= 1: code = normalised value (reference), paper = raw stream (eq. 4-7)");
  r.add("hmoe_layernorm", o.hmoe_layernorm, "per-stratum LayerNorms; the block output is normalised").arch();
  r.add("expert_parallel", o.expert_parallel,
        "on W ranks each holds experts/W experts (experts % W == 0); false = every rank holds all");
  r.alias("moe_expert_count", "experts");
  r.alias("hmoe_dynamic", "strata");
  r.alias("moe_top1_expert", "top1");
  r.alias("moe_second_expert_policy", "second_expert_policy");
  r.alias("moe_eval_capacity_token_fraction", "eval_capacity_token_fraction");
  r.alias("moe_normalize_gate_prob_before_dropping", "normalize_gate_prob_before_dropping");
  r.alias("moe_eom", "eom_rate");
  r.alias("cmr_gate_drop", "cmr_gate_dropout");
  r.alias("cmr_gate_loss_p", "cmr_target");
  r.alias("cmr_gate_loss_wt", "cmr_loss_weight");
  r.alias("moe_gate_loss_wt", "gate_loss_weight");
}

void describe(OptionRegistry& r, DataOptions& o) {
  r.section("data", "corpus, vocabulary, languages and batching");
  r.add("data_dir", o.data_dir, "binarised corpus directory (ours, or a fairseq data-bin)");
  choice(r, "format", o.format, "corpus format: strata (our binary files) or fairseq (.idx/.bin + dict.txt)");
  r.add("spm_model", o.spm_model, "SentencePiece model; empty = the one in data_dir");
  r.add("langs", o.langs, "every language, e.g. en,de,fr (one __xx__ token each, in this order)");
  r.add("lang_pairs", o.lang_pairs, "training directions, e.g. en-de,de-en");
  r.add("max_tokens", o.max_tokens, "token budget of one batch per process", positive<int>());
  r.add("max_sentences", o.max_sentences, "sentences per batch; 0 = no limit", non_negative<int>());
  r.add("max_source_len", o.max_source_len, "skip longer training sources; 0 = max_source_positions",
        non_negative<int>());
  r.add("max_target_len", o.max_target_len, "skip longer training targets; 0 = max_target_positions",
        non_negative<int>());
  r.add("sampling_temperature", o.sampling_temperature, "pair sampling p ~ size^(1/T); 1 = by data size",
        positive<double>());
  r.add("train_subset", o.train_subset, "name of the training split");
  r.add("valid_subset", o.valid_subset, "name of the validation split");
  choice(r, "encoder_langtok", o.encoder_langtok, "language token prepended to the source: tgt (reference), src, none");
  r.add("decoder_langtok", o.decoder_langtok, "start the target with its language token (forced when decoding)");
}

void describe(OptionRegistry& r, TrainOptions& o) {
  r.section("train", "optimisation, schedule, checkpoints and runtime");
  r.add("seed", o.seed, "random seed (weights, dropout, Gumbel noise, data order)", non_negative<int64_t>());
  r.add("lr", o.lr, "peak learning rate of the inverse-sqrt schedule", positive<double>());
  r.add("warmup_updates", o.warmup_updates, "linear warm-up length in updates", non_negative<int>());
  r.add("warmup_init_lr", o.warmup_init_lr, "learning rate at update 0", non_negative<double>());
  r.add("adam_beta1", o.adam_beta1, "Adam beta1", kProbability);
  r.add("adam_beta2", o.adam_beta2, "Adam beta2", kProbability);
  r.add("adam_eps", o.adam_eps, "Adam epsilon", positive<double>());
  r.add("weight_decay", o.weight_decay, "decoupled weight decay", non_negative<double>());
  r.add("clip_norm", o.clip_norm, "clip the gradient norm to this; 0 = no clipping", non_negative<double>());
  r.add("label_smoothing", o.label_smoothing, "label smoothing epsilon", kProbability);
  choice(r, "label_smoothing_form", o.label_smoothing_form,
         "moe = eps/V on every class (reference criterion), fairseq = eps/(V-1) on the others");
  r.add("update_freq", o.update_freq, "batches accumulated per update", positive<int>());
  r.add("grad_bucket_mb", o.grad_bucket_mb,
        "gradient all-reduce bucket size in MiB with several ranks (one all-reduce per bucket)",
        Check<double>{"in (0, 1024]", [](const double& v) { return v > 0 && v <= 1024; }});
  r.add("max_update", o.max_update, "stop after this many updates; 0 = no limit", non_negative<int>());
  r.add("max_epoch", o.max_epoch, "stop after this many epochs; 0 = no limit", non_negative<int>());
  r.add("max_time_minutes", o.max_time_minutes, "stop (with a checkpoint) after this long; 0 = no limit",
        non_negative<double>());
  r.add("validate_interval_updates", o.validate_interval_updates, "validate every N updates", positive<int>());
  r.add("save_interval_updates", o.save_interval_updates, "checkpoint every N updates", positive<int>());
  r.add("keep_last", o.keep_last, "periodic checkpoints kept besides last and best; -1 = all", at_least(-1));
  choice(r, "best_checkpoint_metric", o.best_checkpoint_metric,
         "metric choosing checkpoint_best (loss and nll minimised, the others maximised)");
  r.add("patience", o.patience, "stop after N validations without a new best; 0 = never", non_negative<int>());
  r.add("valid_bleu_sentences", o.valid_bleu_sentences,
        "dev sentences decoded for BLEU at each validation; 0 = off, -1 = all", at_least(-1));
  r.add("save_dir", o.save_dir, "checkpoint and log directory (resumes from its checkpoint_last)");
  r.add("log_interval", o.log_interval, "log training metrics every N updates", positive<int>());
  choice(r, "precision", o.precision, "compute precision; the CPU trains in fp32; fp16 uses dynamic loss scaling");
  choice(r, "device", o.device, "auto = CUDA when built with it and a GPU is visible");
  r.add("threads", o.threads, "CPU threads; 0 = all cores", non_negative<int>());
  r.add("loss_scale_init", o.loss_scale_init, "initial fp16 loss scale", positive<double>());
  r.add("loss_scale_window", o.loss_scale_window, "overflow-free updates before the loss scale doubles",
        positive<int>());
}

void describe(OptionRegistry& r, DecodeOptions& o) {
  r.section("decode", "translation (strata-translate and BLEU during validation)");
  r.add("beam", o.beam, "beam size", positive<int>());
  r.add("lenpen", o.lenpen, "length penalty: scores are divided by length^lenpen", non_negative<double>());
  r.add("max_len_a", o.max_len_a, "output length limit a * source_len + b: the a", non_negative<double>());
  r.add("max_len_b", o.max_len_b, "output length limit a * source_len + b: the b", non_negative<int>());
  r.add("nbest", o.nbest, "hypotheses printed per sentence (at most beam)", positive<int>());
  r.add("greedy", o.greedy, "greedy search instead of beam search");
  r.add("batch_sentences", o.batch_sentences, "sentences decoded together", positive<int>());
  r.add("generation_capacity_token_fraction", o.generation_capacity_token_fraction,
        "MoE capacity when translating, as a fraction of tokens (1.0 = no dropping)", positive<double>());
  r.add("source_lang", o.source_lang, "source language for strata-translate");
  r.add("target_lang", o.target_lang, "target language for strata-translate");
}

void describe(OptionRegistry& r, Config& c) {
  describe(r, c.model);
  describe(r, c.moe);
  describe(r, c.data);
  describe(r, c.train);
  describe(r, c.decode);
}

std::vector<std::pair<std::string, std::string>> parse_lang_pairs(const DataOptions& o) {
  auto known = [&](const std::string& l) {
    for (const auto& x : o.langs)
      if (x == l) return true;
    return false;
  };
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : o.lang_pairs) {
    std::vector<std::pair<std::string, std::string>> splits;
    for (size_t i = p.find('-'); i != std::string::npos; i = p.find('-', i + 1)) {
      std::string s = p.substr(0, i), t = p.substr(i + 1);
      if (s.empty() || t.empty()) continue;
      if (o.langs.empty() || (known(s) && known(t))) splits.emplace_back(s, t);
    }
    if (splits.size() != 1) {
      std::string langs;
      for (size_t i = 0; i < o.langs.size(); ++i) langs += (i ? "," : "") + o.langs[i];
      if (!o.langs.empty())
        STRATA_FAIL() << "lang_pairs: '" << p << "' is not SRC-TGT with both languages in langs " << langs;
      STRATA_FAIL() << "lang_pairs: '" << p << "' is not SRC-TGT (a code with '-' needs langs to split it)";
    }
    if (splits[0].first == splits[0].second)
      STRATA_FAIL() << "lang_pairs: '" << p << "' translates a language into itself";
    out.push_back(splits[0]);
  }
  return out;
}

}  // namespace strata::config
