// One gate pass (docs/smoe_spec.md section 1.2): logits over the V visible
// experts of a stratum, softmax, routing (moe/routing.h), the combine weights
// (differentiable through the gathered probabilities), the balance loss and
// the optional router z-loss. Runs in f32 (f64 when the input is f64, for
// gradient checks) whatever the stream's dtype.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/core/philox.h"
#include "strata/core/tensor.h"
#include "strata/moe/routing.h"

namespace strata::moe {

struct GateOptions {
  bool top1 = false;
  config::SecondExpertPolicy policy = config::SecondExpertPolicy::Sampling;
  double capacity_factor = 1.0;
  double eval_capacity_fraction = 0.25;  // <= 0: the training capacity in evaluation too
  bool normalize_before_dropping = false;
  // Deviation (off = reference): the balance loss and z-loss see only real,
  // non-PAD rows, with their count as the denominator.
  bool balance_ignore_padding = false;
  bool z_loss = false;  // compute the router z-loss
};

struct GateOutput {
  Routing routing;  // on the host whatever the device (a GPU gate brings it over in one transfer)
  // A GPU gate's routing on the device (routed there; undefined on the CPU
  // and for n = 0): the source of the device slot map (make_device_slot_map).
  DeviceRouting device_routing;
  Tensor probs;    // [n, V] softmax (gate dtype), differentiable
  Tensor weights;  // [n, k] combine weights, 0 for dropped choices (gate dtype)
  Tensor balance;  // 0-d L_s = V * sum_e m_e c_e
  Tensor z_loss;   // 0-d mean over rows of logsumexp(logits)^2; undefined unless requested
};

// z [n, dim] the n real rows of this pass (this rank), wg [V, dim] the gate
// weight; S = buffer rows (the all-reduced MAX of n), so S - n rows are zero
// padding that the reference gates too: logits 0, uniform probabilities, no
// expert choice, but counted in the balance loss's means. pad_rows [n]
// (nonzero = sentence PAD token) may be null; it only matters with
// balance_ignore_padding. capacity is the per-expert C.
GateOutput gate_forward(const Tensor& z, const Tensor& wg, int64_t S, int64_t capacity, const GateOptions& opt,
                        const uint8_t* pad_rows, const PhiloxStream* noise);

// Combine weights from gathered probabilities (exposed for tests):
// g1, g2 [n, 1] the probabilities of the first/second choice (g2 = 0 where
// there is none), keep1/keep2 [n, 1] 0/1 constants. Top-2: renormalised over
// the kept choices after dropping (or before, with normalize_before_dropping),
// clamped below at the dtype's eps; top-1: g1 * keep1.
Tensor combine_weights(const Tensor& g1, const Tensor& g2, const Tensor& keep1, const Tensor& keep2, bool top1,
                       bool normalize_before_dropping);

}  // namespace strata::moe
