#include "strata/moe/profile.h"

#include <chrono>

#include "strata/autograd/node.h"

namespace strata::moe {

MoEProfile& profile() {
  static MoEProfile p;
  return p;
}

double profile_clock() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

GateTimer::GateTimer() : start_(std::make_shared<double>(-1.0)) {}

Tensor GateTimer::begin_gate(const Tensor& input) {
  if (!profile().enabled || !input.needs_grad()) return input;
  return autograd::record("moe_profile_gate_begin", input.detach(), {input},
                          [s = start_](const Tensor& g) -> std::vector<Tensor> {
                            if (*s >= 0) profile().gate_bwd += profile_clock() - *s;
                            *s = -1.0;
                            return {g};
                          });
}

Tensor GateTimer::end_gate(const Tensor& output) {
  if (!profile().enabled || !output.needs_grad()) return output;
  return autograd::record("moe_profile_gate_end", output.detach(), {output},
                          [s = start_](const Tensor& g) -> std::vector<Tensor> {
                            if (*s < 0) *s = profile_clock();
                            return {g};
                          });
}

}  // namespace strata::moe
