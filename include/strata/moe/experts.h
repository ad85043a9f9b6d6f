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

#include "strata/core/philox.h"
#include "strata/nn/module.h"

namespace strata::moe {

// A contiguous range of experts, stacked: fc1_weight [V, ffn, dim],
// fc1_bias [V, ffn], fc2_weight [V, dim, ffn], fc2_bias [V, dim].
struct ExpertWeights {
  Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;
  int64_t count() const { return fc1_weight.defined() ? fc1_weight.size(0) : 0; }
};

// Where the rows of an expert buffer [V, R, ·] come from, so that dropout
// inside the experts is keyed by the token rather than by its buffer slot
// (docs/moe.md, "Randomness"). Buffer row (v, r) holds the token of pass row
// row[v * R + r] (-1: an empty slot) of some micro-batch, processed by global
// expert global[v]; act/out are that micro-batch's streams for the activation
// and the output dropout (one entry per buffer row; a list may be empty when
// its dropout is off). The mask of element f of the row is the stream's
// uniform at (row * experts + global) * F + f, dropped when below p (compared
// in f32, as backend::dropout_mask): a pure function of (micro-batch stream,
// pass row, global expert, feature), whatever the capacity, the buffer layout
// or the rank that computes the expert.
struct ExpertRowKeys {
  int64_t experts = 0;          // E: all experts of the block (stride of the global id)
  std::vector<int64_t> global;  // [V]
  std::vector<int64_t> row;     // [V * R]
  std::vector<PhiloxStream> act, out;
};

// The keep-mask [V, R, F] of a row-keyed dropout with probability p (host,
// `dtype`): 1 / (1 - p) where kept, 0 where dropped and on empty rows.
// streams: keys.act or keys.out.
Tensor expert_dropout_mask(int64_t V, int64_t R, int64_t F, DType dtype, double p, const ExpertRowKeys& keys,
                           const std::vector<PhiloxStream>& streams);

// x [V, R, F] * expert_dropout_mask (built on the host, moved to x's device);
// the mask is saved for the backward. p = 0 returns x.
Tensor expert_dropout(const Tensor& x, double p, const ExpertRowKeys& keys, const std::vector<PhiloxStream>& streams);

// x [V, C, dim] (expert v's slots in row v) -> [V, C, dim]. In training the
// activation dropout and the output dropout are row-keyed (expert_dropout with
// keys->act, keys->out) when keys is given, as the MoE block always does;
// without keys they draw one stream each from ctx, in that order, keyed by
// buffer position (a standalone FFN over a buffer that is not a token batch).
Tensor experts_forward(const Tensor& x, const ExpertWeights& w, double activation_dropout, double dropout,
                       const nn::ForwardContext& ctx, const ExpertRowKeys* keys = nullptr);

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
