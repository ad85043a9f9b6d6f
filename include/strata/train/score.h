// Scoring a saved checkpoint, like fairseq-validate: the label-smoothed loss
// and the NLL of every direction of a split in evaluation mode (no dropout),
// computed exactly as the trainer's validation computes them. The optional
// batch dump (the first batch of the first direction with Strata's loss on
// it) is what the independent PyTorch reference (test/reference/) checks.
//
// The checkpoint is loaded with load_model (train/load_model.h).
//
//   strata-score CHECKPOINT [--set key=value ...] [--split NAME] [--dump-batch OUT_DIR]
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/data/translation_batches.h"
#include "strata/model/transformer_model.h"
#include "strata/train/load_model.h"

namespace strata::train {

// Sums over the non-padding target tokens, natural log.
struct LossSums {
  double loss_sum = 0, nll_sum = 0;
  int64_t tokens = 0;
  int64_t sentences = 0;
  void add(const LossSums& o);
  // Per token in base 2 (the trainer's validation numbers); 0 without tokens.
  double loss_bits() const;
  double nll_bits() const;
};

// The loss of one batch in evaluation mode (dropout off, no autograd tape),
// with the config's label smoothing and smoothing form. With `token_nll`, also
// stores there the unsmoothed NLL of every target token ([B, T] f64, 0 at padding).
LossSums score_batch(model::TransformerModel& model, const data::Batch& batch, const config::Config& cfg,
                     Tensor* token_nll = nullptr);

struct DirectionScore {
  std::string name;  // "en-de"
  LossSums sums;
};

struct ScoreReport {
  std::string split;
  std::vector<DirectionScore> directions;
  LossSums total;
};

// Every direction of `split` ("" = the config's valid_subset), batched as the
// trainer's validation batches it. With a non-empty `dump_dir`, also writes
// the first batch of the first direction (see write_batch_dump).
ScoreReport score_split(LoadedModel& m, const std::string& split, const std::string& dump_dir = "");

// dir/batch.safetensors (src, prev, target as I64; token_nll as F64) and
// dir/strata_loss.json: {"loss_sum", "nll_sum", "tokens", "sentences",
// "label_smoothing", "smoothing_form", "padding_idx", "vocab_size", "direction", "split"}.
void write_batch_dump(const std::string& dir, const data::Batch& batch, const LossSums& sums, const Tensor& token_nll,
                      const config::Config& cfg, const std::string& direction, const std::string& split);

// The report as printed by strata-score: one line per direction, then the total.
void print_report(std::ostream& os, const ScoreReport& r);

// The program; returns the exit status (0 ok, 1 error, 2 usage).
int score_main(int argc, const char* const* argv);

}  // namespace strata::train
