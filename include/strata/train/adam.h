// Adam exactly as fairseq's `--optimizer adam` (fairseq/optim/adam.py), which
// is torch.optim.Adam's original formulation with decoupled weight decay:
//   m = b1*m + (1-b1)*g
//   v = b2*v + (1-b2)*g*g
//   p -= lr*wd*p                                      (when wd != 0, before the step)
//   p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
// Note eps is added to the *uncorrected* sqrt(v); torch >= 1.x's Adam adds it
// after dividing by sqrt(1-b2^t), which differs in the first updates.
// The step count t is kept per parameter (as fairseq does): a parameter that
// gets no gradient in a step is skipped and its t does not advance.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/train/safetensors.h"

namespace strata::train {

// Defaults are the SMoE runs' settings (fairseq's transformer recipes).
struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  double weight_decay = 0.0;
};

class Adam {
 public:
  // `params` are f32 (or f64, for tests) CPU leaves with unique names. State
  // (exp_avg, exp_avg_sq) has each parameter's dtype and starts at zero.
  Adam(NamedTensors params, AdamOptions options = {});

  // Updates every parameter that has a gradient, in place.
  void step(double lr);
  // Drops every parameter's gradient.
  void zero_grad();

  // "<name>.exp_avg", "<name>.exp_avg_sq" (the parameter's shape and dtype)
  // and "<name>.step" (i64 scalar), per parameter in order. The tensors are
  // the live state: save them, do not modify them.
  NamedTensors state_dict() const;
  // Copies a state_dict() back in. Names, shapes and steps are validated
  // before anything is changed; a missing or unexpected entry throws naming it.
  void load_state_dict(const NamedTensors& state);

  const NamedTensors& params() const { return params_; }
  const AdamOptions& options() const { return options_; }
  // Steps taken by parameter i.
  int64_t param_steps(size_t i) const { return steps_.at(i); }

 private:
  NamedTensors params_;
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
};

}  // namespace strata::train
