// Wall-clock accounting of the MoE blocks' routing work, for the step
// benchmark (test/bench/moe_step.cpp): the gate (logits, softmax, routing
// bookkeeping, combine weights, balance loss), dispatch, combine, the expert
// all-to-all and the pass loop's row moves, forward and backward, next to the
// expert GEMMs. Off by default; when off nothing is timed or recorded.
#pragma once
#include <memory>

#include "strata/core/tensor.h"

namespace strata::moe {

struct MoEProfile {
  bool enabled = false;
  double gate_fwd = 0, gate_bwd = 0;
  double dispatch_fwd = 0, dispatch_bwd = 0;
  double combine_fwd = 0, combine_bwd = 0;
  double exchange_fwd = 0, exchange_bwd = 0;  // all-to-all (copies on one process)
  double rows_fwd = 0, rows_bwd = 0;          // the pass loop's row gathers/replacements
  double experts_fwd = 0;                     // the batched expert FFN (forward only)
  double slots = 0, filled = 0;               // expert buffer rows computed, and those holding a token
  // gate + dispatch + combine, both directions
  double routing() const { return gate_fwd + gate_bwd + dispatch_fwd + dispatch_bwd + combine_fwd + combine_bwd; }
  void reset() { *this = MoEProfile{enabled}; }
};

// The process-wide profile (the benchmark runs one model at a time).
MoEProfile& profile();
double profile_clock();  // seconds, monotonic

// Brackets the backward of the gate: end_gate marks the gate's outputs (its
// backward starts the clock when the first of them is reached), begin_gate
// its input (its backward stops the clock). Identities when profiling is off.
class GateTimer {
 public:
  GateTimer();
  Tensor begin_gate(const Tensor& input);
  Tensor end_gate(const Tensor& output);

 private:
  std::shared_ptr<double> start_;
};

}  // namespace strata::moe
