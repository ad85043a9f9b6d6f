#include "strata/backend/cross_entropy.h"

#include <cmath>

#include "strata/core/dispatch.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/cross_entropy.h"
#include "strata/backend/device_dispatch.h"
#endif

namespace strata::backend {

namespace {
void check_inputs(const Tensor& logits, const Tensor& target, const char* op) {
  STRATA_CHECK(logits.dim() == 2) << op << ": logits must be [tokens, vocab], got " << logits.str();
  STRATA_CHECK(target.dim() == 1 && target.size(0) == logits.size(0))
      << op << ": target " << target.str() << " does not match logits " << logits.str();
  STRATA_CHECK(logits.device().is_cpu() && target.device().is_cpu()) << op << ": CPU tensors expected";
}
}  // namespace

CrossEntropyForward label_smoothed_ce_forward(const Tensor& logits_in, const Tensor& target_in, double a, double b,
                                              int64_t ignore_index) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("label_smoothed_cross_entropy", {logits_in, target_in}))
    return cuda::label_smoothed_ce_forward(logits_in, target_in, a, b, ignore_index);
#endif
  check_inputs(logits_in, target_in, "label_smoothed_cross_entropy");
  Tensor logits = logits_in.contiguous();
  Tensor target = target_in.to(DType::I64).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1);
  CrossEntropyForward out;
  out.lse = Tensor::empty({N}, logits.dtype());
  const int64_t* t = target.data<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    if (t[i] == ignore_index) continue;
    STRATA_CHECK(t[i] >= 0 && t[i] < V) << "label_smoothed_cross_entropy: target " << t[i] << " at row " << i
                                        << " outside the vocabulary of " << V;
    ++out.tokens;
  }
  double loss = 0, nll = 0;
  dispatch_float(logits.dtype(), "label_smoothed_cross_entropy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = logits.data<T>();
    T* lse = out.lse.data<T>();
#pragma omp parallel for reduction(+ : loss, nll) schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const T* row = x + i * V;
      T mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = row[v] > mx ? row[v] : mx;
      double se = 0, sx = 0;
      for (int64_t v = 0; v < V; ++v) {
        se += std::exp(double(row[v] - mx));
        sx += double(row[v]);
      }
      double l = std::log(se) + double(mx);
      lse[i] = T(l);
      if (t[i] == ignore_index) continue;
      double nll_i = l - double(row[t[i]]);
      double smooth_i = double(V) * l - sx;
      loss += a * nll_i + b * smooth_i;
      nll += nll_i;
    }
  });
  out.loss_sum = Tensor::scalar(loss, logits.dtype());
  out.nll_sum = Tensor::scalar(nll, logits.dtype());
  return out;
}

Tensor label_smoothed_ce_backward(const Tensor& grad_loss, const Tensor& logits_in, const Tensor& target_in,
                                  const Tensor& lse, double a, double b, int64_t ignore_index) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("label_smoothed_cross_entropy backward", {grad_loss, logits_in, target_in, lse}))
    return cuda::label_smoothed_ce_backward(grad_loss, logits_in, target_in, lse, a, b, ignore_index);
#endif
  check_inputs(logits_in, target_in, "label_smoothed_cross_entropy backward");
  Tensor logits = logits_in.contiguous();
  Tensor target = target_in.to(DType::I64).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1);
  const double g = grad_loss.item();
  Tensor grad = Tensor::empty({N, V}, logits.dtype());
  const int64_t* t = target.data<int64_t>();
  dispatch_float(logits.dtype(), "label_smoothed_cross_entropy backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = logits.data<T>();
    const T* l = lse.data<T>();
    T* gr = grad.data<T>();
    // d loss_row / d x_v = (a + b V) p_v - a [v = t] - b
    const T scale_p = T(g * (a + b * double(V))), shift = T(-g * b), hit = T(-g * a);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      T* gi = gr + i * V;
      if (t[i] == ignore_index) {
        for (int64_t v = 0; v < V; ++v) gi[v] = T(0);
        continue;
      }
      const T* row = x + i * V;
      const T li = l[i];
      for (int64_t v = 0; v < V; ++v) gi[v] = scale_p * std::exp(row[v] - li) + shift;
      gi[t[i]] += hit;
    }
  });
  return grad;
}

}  // namespace strata::backend
