// GPU fused label-smoothed cross-entropy (src/backend/cuda/cross_entropy.cu),
// with the contract of strata/backend/cross_entropy.h: logits [N, V] (f32,
// f64, f16 or bf16; any strides), target [N] (i32/i64) on a CUDA device.
// For f32/f64 logits lse, loss_sum and nll_sum have the logits' dtype, as on
// the CPU; for f16/bf16 logits they are f32 (the statistics stay f32).
// loss_sum/nll_sum are fixed-order sums of per-row values (no atomics), so
// repeated runs agree bit for bit.
//
// The forward makes ONE host synchronisation: `tokens` is a host int64 and a
// target outside [0, V) must throw, so the count (and the first bad row) are
// computed on the GPU and those three integers are copied back. The backward
// reads grad_loss on the device and never synchronises.
#pragma once
#include "strata/backend/cross_entropy.h"

namespace strata::backend::cuda {

CrossEntropyForward label_smoothed_ce_forward(const Tensor& logits, const Tensor& target, double a, double b,
                                              int64_t ignore_index);
Tensor label_smoothed_ce_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& target,
                                  const Tensor& lse, double a, double b, int64_t ignore_index);

}  // namespace strata::backend::cuda
