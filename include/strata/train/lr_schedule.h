// Learning-rate schedules, each the same function of the update count as its
// fairseq namesake's step_update(num_updates). The trainer asks for
// lr_at(updates done so far) before each optimizer step, as fairseq does
// (which calls step_update(0) at start and step_update(n) after update n), so
// the first update of an inverse_sqrt run uses warmup_init_lr.
#pragma once
#include <cstdint>
#include <string>

namespace strata::train {

struct LrScheduleOptions {
  // "inverse_sqrt", "fixed" or "polynomial_decay" (power 1 = linear decay).
  std::string scheduler = "inverse_sqrt";
  double lr = 8e-4;               // peak learning rate (the SMoE runs' --lr)
  int64_t warmup_updates = 8000;  // linear warm-up length (0 allowed for fixed/polynomial_decay)
  // inverse_sqrt: warm-up starts here; < 0 means fairseq's default (0 with
  // warm-up, lr without).
  double warmup_init_lr = 1e-7;
  // polynomial_decay: reaches end_learning_rate at total_num_update.
  int64_t total_num_update = 1000000;
  double end_learning_rate = 0.0;
  double power = 1.0;
};

class LrSchedule {
 public:
  // Validates the options (unknown scheduler, negative lr, inverse_sqrt
  // without warm-up, total_num_update <= warmup_updates, ...).
  explicit LrSchedule(LrScheduleOptions options);
  // The learning rate after `num_updates` (>= 0) updates.
  double lr_at(int64_t num_updates) const;
  const LrScheduleOptions& options() const { return options_; }

 private:
  LrScheduleOptions options_;
  double warmup_init_lr_ = 0;  // resolved from the options
};

}  // namespace strata::train
