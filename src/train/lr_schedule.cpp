#include "strata/train/lr_schedule.h"

#include <cmath>

#include "strata/core/error.h"

namespace strata::train {

LrSchedule::LrSchedule(LrScheduleOptions options) : options_(std::move(options)) {
  const LrScheduleOptions& o = options_;
  STRATA_CHECK(o.scheduler == "inverse_sqrt" || o.scheduler == "fixed" || o.scheduler == "polynomial_decay")
      << "LrSchedule: unknown scheduler '" << o.scheduler << "' (expected inverse_sqrt, fixed or polynomial_decay)";
  STRATA_CHECK(std::isfinite(o.lr) && o.lr >= 0) << "LrSchedule: lr must be finite and >= 0, got " << o.lr;
  STRATA_CHECK(o.warmup_updates >= 0) << "LrSchedule: warmup_updates must be >= 0, got " << o.warmup_updates;
  if (o.scheduler == "inverse_sqrt") {
    // fairseq divides by warmup_updates here; without warm-up the decay
    // factor lr*sqrt(0) would make every learning rate 0.
    STRATA_CHECK(o.warmup_updates >= 1) << "LrSchedule: inverse_sqrt needs warmup_updates >= 1, got "
                                        << o.warmup_updates;
    STRATA_CHECK(std::isfinite(o.warmup_init_lr)) << "LrSchedule: warmup_init_lr must be finite";
    warmup_init_lr_ = o.warmup_init_lr >= 0 ? o.warmup_init_lr : 0.0;
  }
  if (o.scheduler == "polynomial_decay") {
    STRATA_CHECK(o.total_num_update > o.warmup_updates)
        << "LrSchedule: polynomial_decay needs total_num_update (" << o.total_num_update << ") > warmup_updates ("
        << o.warmup_updates << ")";
    STRATA_CHECK(std::isfinite(o.end_learning_rate) && o.end_learning_rate >= 0 && std::isfinite(o.power) &&
                 o.power > 0)
        << "LrSchedule: polynomial_decay needs end_learning_rate >= 0 and power > 0, got " << o.end_learning_rate
        << " and " << o.power;
  }
}

double LrSchedule::lr_at(int64_t n) const {
  STRATA_CHECK(n >= 0) << "LrSchedule::lr_at: negative update count " << n;
  const LrScheduleOptions& o = options_;
  const double w = double(o.warmup_updates);
  if (o.scheduler == "inverse_sqrt") {
    if (n < o.warmup_updates) return warmup_init_lr_ + double(n) * ((o.lr - warmup_init_lr_) / w);
    // the same operations as fairseq: decay_factor * num_updates**-0.5
    const double decay_factor = o.lr * std::sqrt(w);
    return decay_factor * std::pow(double(n), -0.5);
  }
  if (o.scheduler == "fixed") {
    // fairseq's fixed schedule counts the warm-up from 1/warmup, not 0.
    if (o.warmup_updates > 0 && n < o.warmup_updates) return (double(n) + 1) / w * o.lr;
    return o.lr;
  }
  // polynomial_decay
  if (o.warmup_updates > 0 && n <= o.warmup_updates) return double(n) / w * o.lr;
  if (n >= o.total_num_update) return o.end_learning_rate;
  const double remaining = 1.0 - (double(n) - w) / (double(o.total_num_update) - w);
  return (o.lr - o.end_learning_rate) * std::pow(remaining, o.power) + o.end_learning_rate;
}

}  // namespace strata::train
