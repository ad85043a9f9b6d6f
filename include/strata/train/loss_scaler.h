// Dynamic loss scaling for fp16 training (fairseq's DynamicLossScaler, as
// torch.cuda.amp.GradScaler): the loss is multiplied by scale() before the
// backward pass so small fp16 gradients do not flush to zero, and the
// gradients are divided by it before the update. A step whose gradients hold
// an inf or NaN is skipped and the scale backs off; after growth_interval
// clean steps in a row the scale grows again.
//
// Every rank must make the same decision, or the replicas drift apart:
// all_finite agrees over the communicator (a MAX all-reduce of the local
// "found a non-finite value" flag), so all ranks skip together.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/dist/communicator.h"

namespace strata::train {

class DynamicLossScaler {
 public:
  // init_scale >= min_scale > 0, growth_factor >= 1, 0 < backoff_factor < 1,
  // growth_interval >= 1; anything else throws naming the option.
  explicit DynamicLossScaler(double init_scale = 128, double growth_factor = 2, double backoff_factor = 0.5,
                             int growth_interval = 2000, double min_scale = 1.0 / 1024);

  double scale() const { return scale_; }
  // Records the outcome of one step and returns true when its update should
  // be applied. On overflow: the scale is multiplied by backoff_factor (never
  // below min_scale), the clean-step count restarts and skipped() grows.
  // Otherwise: one more clean step; at growth_interval of them the scale is
  // multiplied by growth_factor (while the result stays finite) and the count
  // restarts.
  bool update(bool overflow);
  int64_t skipped() const { return skipped_; }
  int good_steps() const { return good_steps_; }
  // Restores a saved state (checkpoint resume); validated like the options.
  void set_state(double scale, int good_steps, int64_t skipped);

  double growth_factor() const { return growth_factor_; }
  double backoff_factor() const { return backoff_factor_; }
  int growth_interval() const { return growth_interval_; }
  double min_scale() const { return min_scale_; }

 private:
  double scale_;
  double growth_factor_, backoff_factor_;
  int growth_interval_;
  double min_scale_;
  int good_steps_ = 0;
  int64_t skipped_ = 0;
};

// True when every element of every (floating) tensor is finite, on every rank
// of `comm` (null: this process only). Tensors may be on the CPU or a GPU
// (there a kernel sets a flag; one host read); undefined and integer tensors
// are skipped. Collective over comm: every rank must call it.
bool all_finite(const std::vector<Tensor>& tensors, dist::Communicator* comm);

}  // namespace strata::train
