#include "strata/autograd/ops_loss.h"

#include "strata/autograd/node.h"
#include "strata/backend/cross_entropy.h"

namespace strata {

CrossEntropyResult label_smoothed_cross_entropy(const Tensor& logits, const Tensor& target, double epsilon,
                                                int64_t ignore_index, SmoothingForm form) {
  STRATA_CHECK(epsilon >= 0 && epsilon < 1) << "label_smoothed_cross_entropy: epsilon must be in [0, 1), got "
                                            << epsilon;
  STRATA_CHECK(logits.dim() == 2 && logits.size(1) > 1)
      << "label_smoothed_cross_entropy: logits must be [tokens, vocab > 1], got " << logits.str();
  const double V = double(logits.size(1));
  double a, b;
  if (form == SmoothingForm::Moe) {
    a = 1 - epsilon;
    b = epsilon / V;
  } else {
    b = epsilon / (V - 1);
    a = 1 - epsilon - b;
  }
  backend::CrossEntropyForward f = backend::label_smoothed_ce_forward(logits, target, a, b, ignore_index);
  CrossEntropyResult r;
  r.nll = f.nll_sum;
  r.tokens = f.tokens;
  r.loss = autograd::record(
      "label_smoothed_cross_entropy", f.loss_sum, {logits, target},
      [xd = logits.detach(), td = target.detach(), lse = f.lse, a, b, ignore_index](const Tensor& g) -> std::vector<Tensor> {
        return {backend::label_smoothed_ce_backward(g, xd, td, lse, a, b, ignore_index), Tensor()};
      });
  return r;
}

}  // namespace strata
