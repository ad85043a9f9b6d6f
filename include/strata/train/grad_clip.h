// Global gradient-norm clipping as fairseq's clip_grad_norm_: the L2 norm over
// every gradient together (computed in double here), then, when max_norm > 0,
// every gradient is multiplied by min(1, max_norm / (norm + 1e-6)).
// Parameters without a gradient are skipped.
//
// Gradients on a GPU (CUDA builds) are summed there: every GPU gradient's
// squares accumulate in f64 in a fixed order (deterministic, agreeing with
// the CPU sum at fp32 tolerance and better) and the total reaches the host
// in one read; scaling runs in place on the device.
#pragma once
#include <functional>
#include <vector>

#include "strata/train/safetensors.h"

namespace strata::train {

// Sum over all gradients of sum(g^2), in double. Any floating grad dtype.
double grad_norm_sq(const std::vector<Tensor>& params);
// Multiplies every gradient by `coef`, in place.
void scale_grads(const std::vector<Tensor>& params, double coef);

// Returns the norm before clipping. `aggregate_norm_sq`, when given, maps this
// process's sum of squares to the global one (e.g. an all-reduce SUM over the
// ranks that hold different shards, such as experts). When the norm is not
// finite the gradients are left untouched: the trainer skips that step.
// max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm,
                      const std::function<double(double)>& aggregate_norm_sq = nullptr);
double clip_grad_norm(const NamedTensors& params, double max_norm,
                      const std::function<double(double)>& aggregate_norm_sq = nullptr);

}  // namespace strata::train
