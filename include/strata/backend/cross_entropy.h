// Fused label-smoothed cross-entropy over the vocabulary, straight from the
// logits: no [N, V] log-probability tensor is materialised, which matters at
// N = 4096 tokens x V = 32k (CPU: src/backend/cpu/cross_entropy.cpp).
//
// Per non-pad row with target t and log-probabilities lp = log_softmax(x):
//   loss_row = a * (-lp_t) + b * sum_v(-lp_v)
// With eps the smoothing: the MoE criterion of the reference uses a = 1-eps,
// b = eps/V; fairseq's plain criterion a = 1-eps-eps/(V-1), b = eps/(V-1).
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

struct CrossEntropyForward {
  Tensor loss_sum;  // 0-d, sum over non-pad rows of loss_row (logits' dtype)
  Tensor nll_sum;   // 0-d, sum over non-pad rows of -lp_t
  Tensor lse;       // [N] log-sum-exp per row (saved for backward)
  int64_t tokens = 0;  // number of non-pad rows
};

// logits [N, V] (f32/f64), target [N] (i32/i64); rows whose target equals
// ignore_index contribute nothing. Targets outside [0, V) are an error.
CrossEntropyForward label_smoothed_ce_forward(const Tensor& logits, const Tensor& target, double a, double b,
                                              int64_t ignore_index);
// d(grad_loss * loss_sum)/d(logits).
Tensor label_smoothed_ce_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                                  const Tensor& lse, double a, double b, int64_t ignore_index);

}  // namespace strata::backend
