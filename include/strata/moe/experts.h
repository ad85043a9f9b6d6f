// The experts of one MoE block: FFN_e(x) = Dropout(W2_e Dropout_act(ReLU(W1_e x + b1_e)) + b2_e),
// computed for all experts at once as batched GEMMs over their capacity slots.
//
// ExpertBank stores the weights stacked ([experts, ffn, dim] etc.) so a pass
// can hand a contiguous range of experts to bmm without copying, while every
// expert still has its own named parameter with its GLOBAL id
// ("<g>.fc1.weight", "<g>.fc1.bias", "<g>.fc2.weight", "<g>.fc2.bias"): the
// registered per-expert tensors are views into the stacked storage, and a
// recorded "stack" op routes the stacked gradient back to them. So
// checkpoints, the optimizer and gradient clipping see ordinary per-expert
// parameters, and a resharding loader can place expert g on any rank.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/nn/module.h"

namespace strata::moe {

// A contiguous range of experts, stacked: fc1_weight [V, ffn, dim],
// fc1_bias [V, ffn], fc2_weight [V, dim, ffn], fc2_bias [V, dim].
struct ExpertWeights {
  Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;
  int64_t count() const { return fc1_weight.defined() ? fc1_weight.size(0) : 0; }
};

// x [V, C, dim] (expert v's slots in row v) -> [V, C, dim]. The activation
// dropout and the output dropout draw from ctx in that order (training only).
Tensor experts_forward(const Tensor& x, const ExpertWeights& w, double activation_dropout, double dropout,
                       const nn::ForwardContext& ctx);

class ExpertBank : public nn::Module {
 public:
  // Holds experts first_global .. first_global + count - 1 (global ids name them).
  ExpertBank(int64_t first_global, int64_t count, int64_t dim, int64_t ffn_dim);
  // Local experts [first, first + count) as differentiable stacked views.
  ExpertWeights range(int64_t first, int64_t count) const;
  int64_t size() const { return count_; }
  int64_t first_global() const { return first_global_; }

 private:
  Tensor stacked(int which, int64_t first, int64_t count) const;
  int64_t first_global_, count_, dim_, ffn_;
  // [fc1.weight, fc1.bias, fc2.weight, fc2.bias]: the stacked storage and the
  // per-expert parameters that alias it.
  Tensor storage_[4];
  std::vector<Tensor> params_[4];
};

}  // namespace strata::moe
