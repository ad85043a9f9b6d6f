// Training losses.
#pragma once
#include "strata/core/tensor.h"

namespace strata {

enum class SmoothingForm {
  Moe,       // eps/V over the whole vocabulary (the reference's MoE criterion)
  Fairseq,   // eps/(V-1) over the other tokens (fairseq's label_smoothed_cross_entropy)
};

struct CrossEntropyResult {
  Tensor loss;      // 0-d, summed over non-pad tokens, differentiable w.r.t. logits
  Tensor nll;       // 0-d, summed unsmoothed NLL (no gradient)
  int64_t tokens = 0;
};

// logits [N, V], target [N]; rows with target == ignore_index are skipped.
CrossEntropyResult label_smoothed_cross_entropy(const Tensor& logits, const Tensor& target, double epsilon,
                                                int64_t ignore_index, SmoothingForm form = SmoothingForm::Moe);

}  // namespace strata
