// The training loop: batches -> forward -> label-smoothed loss -> backward ->
// gradient normalisation by target tokens -> clipping -> Adam with the
// inverse-sqrt schedule; validation (loss per direction, BLEU on a dev
// sample), checkpoint_last / checkpoint_best / periodic checkpoints, early
// stopping, progress lines and metrics.jsonl. Starting again with the same
// save_dir resumes from checkpoint_last and reproduces the uninterrupted
// run's losses exactly (dropout streams are keyed by the update number and
// the data order by (seed, epoch)).
#pragma once
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/data/translation_batches.h"
#include "strata/data/vocabulary.h"
#include "strata/model/transformer_model.h"
#include "strata/train/adam.h"
#include "strata/train/lr_schedule.h"

namespace strata::train {

struct TrainerState {
  int64_t update = 0;           // updates done
  int64_t epoch = 1;            // current epoch (1-based)
  int64_t batch_in_epoch = 0;   // batches of the current epoch already consumed
  double best_metric = 0;
  bool has_best = false;
  int64_t best_update = 0;
  int64_t stalls = 0;           // validations since the last new best
  double train_seconds = 0;     // wall time spent training, over all runs
};

struct ValidationResult {
  double loss = 0, nll = 0;  // base 2, per target token
  int64_t tokens = 0;
  double bleu = -1, chrf = -1;  // -1: not computed
  std::vector<std::pair<std::string, double>> direction_loss;
  std::vector<std::pair<std::string, double>> direction_bleu;
};

struct UpdateStats {
  double loss_sum = 0, nll_sum = 0;  // natural log, summed over tokens
  int64_t tokens = 0;
  double grad_norm = 0;
};

class Trainer {
 public:
  explicit Trainer(config::Config cfg, std::ostream& log);
  ~Trainer();
  // Trains until max_update / max_epoch / max_time / patience; returns the updates done.
  int64_t run();
  // One optimizer update over the next update_freq batches (public for tests).
  UpdateStats train_update();
  ValidationResult validate();
  void save_checkpoint(const ValidationResult* valid);

  const TrainerState& state() const { return state_; }
  model::TransformerModel& model() { return *model_; }
  const data::Vocabulary& vocab() const { return *vocab_; }
  // Called after every update with its stats (tests record the loss sequence).
  std::function<void(int64_t update, const UpdateStats&)> on_update;
  // Asks run() to checkpoint and return at the next update boundary (signals).
  void request_stop() { stop_requested_ = true; }

 private:
  void setup();
  void try_resume();
  std::vector<data::ExampleRef> next_batch();
  bool better(double metric) const;

  config::Config cfg_;
  std::ostream& log_;
  std::shared_ptr<data::Vocabulary> vocab_;
  std::unique_ptr<data::TranslationBatches> train_, valid_;
  std::unique_ptr<model::TransformerModel> model_;
  std::unique_ptr<Adam> adam_;
  std::unique_ptr<LrSchedule> schedule_;
  TrainerState state_;
  std::vector<std::vector<data::ExampleRef>> plan_;  // current epoch's batches
  int64_t plan_epoch_ = -1;
  volatile bool stop_requested_ = false;
};

}  // namespace strata::train
