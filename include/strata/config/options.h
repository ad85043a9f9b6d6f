// The option structs: the project's contract for every tunable setting. Each
// module reads its struct; `config` fills them from YAML and `--set key=value`.
// Defaults are the SMoE reference's M4 settings (runs/run_m4.sh, see
// docs/smoe_spec.md section 3), so a default-constructed Config describes the
// paper's transformer_base model. Key names, help and value checks live next
// to each field's registration in src/config/options.cpp (one place per
// struct); docs/config.md lists them all.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace strata::config {

class OptionRegistry;

// ---------------------------------------------------------------- model ----
struct ModelOptions {
  int encoder_layers = 6;
  int decoder_layers = 6;
  int embed_dim = 512;
  int ffn_dim = 2048;  // dense FFN width; every expert uses it too
  int attention_heads = 8;
  double dropout = 0.3;             // residual/FFN-output dropout (also inside experts)
  double attention_dropout = 0.1;   // on attention probabilities
  double activation_dropout = 0.0;  // after the FFN's ReLU ("relu_dropout")
  bool share_all_embeddings = true;  // encoder in, decoder in, output projection tied
  int max_source_positions = 512;
  int max_target_positions = 512;
  int vocab_size = 0;  // 0 = taken from the data (SentencePiece model / dict.txt)
  double layernorm_eps = 1e-5;
};

// ------------------------------------------------------------------ moe ----
enum class MoEType { Base, Eom, Cmr };
// How the second expert of a top-2 gate is chosen: Gumbel-noised argmax
// (reference), plain argmax (fairseq "all"), or fairseq's "random" (the
// argmax second expert is kept with probability min(1, 2*g2)).
enum class SecondExpertPolicy { Sampling, Argmax, Random };
// Residual base at strata >= 1: the reference code adds the normalised value
// (h' = z + y(z), z = LN(h)); the paper's eq. (4)-(7) add the raw h.
enum class SmoeResidual { Code, Paper };

struct MoEOptions {
  MoEType moe_type = MoEType::Base;
  int experts = 0;          // experts per MoE block; 0 = dense model
  std::vector<int> strata;  // experts per stratum, summing to `experts`; load_config turns [] into {experts}
  int moe_freq = 2;          // layer i (0-based) is MoE when (i+1) % moe_freq == 0
  int encoder_moe_freq = -1;  // -1 = moe_freq; 0 = no MoE layers in the encoder
  int decoder_moe_freq = -1;  // -1 = moe_freq; 0 = no MoE layers in the decoder
  bool top1 = false;  // Switch: top-1 gate, combine weight = raw probability
  SecondExpertPolicy second_expert_policy = SecondExpertPolicy::Sampling;
  // Training capacity per expert = ceil(capacity_factor * k * ceil(S / V)),
  // k = 1 (top1) or 2: 1.0 gives the reference's 2*ceil(S/V) and ceil(S/V).
  double capacity_factor = 1.0;
  // Capacity in validation = ceil(f * S); f < 0 means "the training capacity".
  double eval_capacity_token_fraction = 0.25;
  bool normalize_gate_prob_before_dropping = false;
  double eom_rate = 0.1;          // expert-output masking probability; used when moe_type == Eom
  double cmr_gate_dropout = 0.1;  // dropout on the CMR gate value; used when moe_type == Cmr
  double cmr_target = 0.8;        // p in |mean(c) - p|
  double cmr_loss_weight = 0.01;
  double gate_loss_weight = 0.01;  // balance loss weight (times ntokens)
  double z_loss_weight = 0.0;      // router z-loss (not in the reference)
  // Deviation from the reference (off by default): leave PAD tokens and
  // buffer-padding rows out of the balance loss statistics.
  bool balance_loss_ignore_padding = false;
  SmoeResidual smoe_residual = SmoeResidual::Code;
  bool hmoe_layernorm = true;  // per-stratum LayerNorms (the reference's --hmoe-layernorm 1)
  // Expert parallelism: on W ranks each holds experts/W experts of every MoE
  // block (experts % W == 0) and tokens travel by all-to-all; false = every
  // rank holds every expert (pure data parallelism).
  bool expert_parallel = false;

  bool enabled() const { return experts > 0; }
  int num_strata() const { return strata.empty() ? (experts > 0 ? 1 : 0) : int(strata.size()); }
  // First global expert id of stratum s.
  int stratum_offset(int s) const {
    int off = 0;
    for (int i = 0; i < s && i < int(strata.size()); ++i) off += strata[i];
    return off;
  }
  int effective_encoder_freq() const { return encoder_moe_freq < 0 ? moe_freq : encoder_moe_freq; }
  int effective_decoder_freq() const { return decoder_moe_freq < 0 ? moe_freq : decoder_moe_freq; }
  // Whether FFN block `layer` (0-based) of the encoder or decoder is an MoE block.
  bool is_moe_layer(bool decoder, int layer) const {
    int f = decoder ? effective_decoder_freq() : effective_encoder_freq();
    return enabled() && f > 0 && (layer + 1) % f == 0;
  }
  double effective_eom_rate() const { return moe_type == MoEType::Eom ? eom_rate : 0.0; }
};

// ----------------------------------------------------------------- data ----
enum class DataFormat { Strata, Fairseq };  // our binary corpus, or a fairseq data-bin
enum class LangtokMode { Tgt, Src, None };  // which language token is prepended to the source

struct DataOptions {
  std::string data_dir;
  DataFormat format = DataFormat::Strata;
  std::string spm_model;              // SentencePiece model; "" = the one in data_dir (format strata)
  std::vector<std::string> langs;     // all languages (one __xx__ token each), in dictionary order
  std::vector<std::string> lang_pairs;  // "en-de", ...: the training directions
  int max_tokens = 4096;               // token budget of one batch per process
  int max_sentences = 0;               // sentences per batch; 0 = no limit
  int max_source_len = 0;              // longer examples are skipped; 0 = max_source_positions
  int max_target_len = 0;              // 0 = max_target_positions
  double sampling_temperature = 1.0;   // pair i drawn with p_i ~ n_i^(1/T); 1 = by data size
  std::string train_subset = "train";
  std::string valid_subset = "valid";
  LangtokMode encoder_langtok = LangtokMode::Tgt;
  bool decoder_langtok = true;  // decoder input starts with the target language token
};

// ---------------------------------------------------------------- train ----
// The label-smoothed loss: the reference MoE criterion's eps/V on every class
// and (1-eps) on the target, or fairseq's plain eps/(V-1) form.
enum class SmoothingForm { Moe, Fairseq };
enum class BestMetric { Loss, Nll, Bleu, SpBleu, Chrf };
enum class Precision { Fp32, Bf16, Fp16 };
enum class DeviceChoice { Auto, Cpu, Cuda };  // Auto = CUDA when built with it and a GPU is visible

struct TrainOptions {
  int64_t seed = 42;
  double lr = 8e-4;  // peak of the inverse-sqrt schedule
  int warmup_updates = 8000;
  double warmup_init_lr = 1e-7;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.98;
  double adam_eps = 1e-6;
  double weight_decay = 0.0;
  double clip_norm = 0.0;  // 0 = no clipping (the reference)
  double label_smoothing = 0.1;
  SmoothingForm label_smoothing_form = SmoothingForm::Moe;
  int update_freq = 1;  // batches accumulated per update
  double grad_bucket_mb = 4.0;  // gradient all-reduce bucket size (MiB) with several ranks
  int max_update = 100000;
  int max_epoch = 0;              // 0 = no limit
  double max_time_minutes = 0.0;  // 0 = no limit
  int validate_interval_updates = 500;
  int save_interval_updates = 500;
  int keep_last = 1;  // periodic checkpoints kept besides checkpoint_last/best; -1 = all
  BestMetric best_checkpoint_metric = BestMetric::Loss;
  int patience = 0;  // stop after this many validations without a new best; 0 = never
  int valid_bleu_sentences = 200;  // dev sentences decoded for BLEU per validation; 0 = off, -1 = all
  std::string save_dir = "checkpoints";
  int log_interval = 100;
  Precision precision = Precision::Fp32;
  DeviceChoice device = DeviceChoice::Auto;
  int threads = 0;  // CPU threads; 0 = all cores
  double loss_scale_init = 128.0;  // fp16 dynamic loss scaling
  int loss_scale_window = 2000;    // overflow-free updates before the scale doubles

  // Loss and nll are minimised; the translation metrics are maximised.
  bool maximize_best_metric() const {
    return best_checkpoint_metric != BestMetric::Loss && best_checkpoint_metric != BestMetric::Nll;
  }
};

// --------------------------------------------------------------- decode ----
struct DecodeOptions {
  int beam = 5;
  double lenpen = 1.0;
  // Output length limit: max_len_a * source_len + max_len_b (and below max_target_positions).
  double max_len_a = 1.2;
  int max_len_b = 10;
  int nbest = 1;
  bool greedy = false;  // greedy search instead of beam search
  int batch_sentences = 100;
  double generation_capacity_token_fraction = 1.0;  // MoE eval capacity when translating (1.0 = no dropping)
  std::string source_lang;  // strata-translate's direction
  std::string target_lang;
};

// --------------------------------------------------------------- config ----
struct Config {
  ModelOptions model;
  MoEOptions moe;
  DataOptions data;
  TrainOptions train;
  DecodeOptions decode;

  int effective_max_source_len() const {
    return data.max_source_len > 0 ? data.max_source_len : model.max_source_positions;
  }
  int effective_max_target_len() const {
    return data.max_target_len > 0 ? data.max_target_len : model.max_target_positions;
  }
};

// Registrations: bind every field of the struct to its key, help and check.
void describe(OptionRegistry& r, ModelOptions& o);
void describe(OptionRegistry& r, MoEOptions& o);
void describe(OptionRegistry& r, DataOptions& o);
void describe(OptionRegistry& r, TrainOptions& o);
void describe(OptionRegistry& r, DecodeOptions& o);
void describe(OptionRegistry& r, Config& c);  // all of the above, in that order

// Canonical names of the enum values, as written in YAML.
const char* to_string(MoEType v);
const char* to_string(SecondExpertPolicy v);
const char* to_string(SmoeResidual v);
const char* to_string(DataFormat v);
const char* to_string(LangtokMode v);
const char* to_string(SmoothingForm v);
const char* to_string(BestMetric v);
const char* to_string(Precision v);
const char* to_string(DeviceChoice v);

// lang_pairs as (source, target). A language code may itself contain '-'
// (pt-BR): when `langs` is set, the split is the one whose two sides are both
// in `langs`. Throws strata::Error naming the pair when it cannot be split.
std::vector<std::pair<std::string, std::string>> parse_lang_pairs(const DataOptions& o);

}  // namespace strata::config
