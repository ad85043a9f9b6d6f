// Adam exactly as fairseq's `--optimizer adam` (fairseq/optim/adam.py), which
// is torch.optim.Adam's original formulation with decoupled weight decay:
//   m = b1*m + (1-b1)*g
//   v = b2*v + (1-b2)*g*g
//   p -= lr*wd*p                                      (when wd != 0, before the step)
//   p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
// Note eps is added to the *uncorrected* sqrt(v); torch >= 1.x's Adam adds it
// after dividing by sqrt(1-b2^t), which differs in the first updates.
// The step count t is kept per parameter (as fairseq does): a parameter that
// gets no gradient in a step is skipped and its t does not advance.
//
// Parameters on a GPU (CUDA builds) are updated there by a fused kernel
// (strata/backend/cuda/adam.h) with the state on the same device; it runs
// detail::adam_element below, the same arithmetic as the CPU loop bit for bit.
// Parameters and state stay f32 (master weights) even when the model trains
// in bf16/f16: the gradients may then be 16-bit and are widened per element.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "strata/core/hostdevice.h"
#include "strata/train/safetensors.h"

namespace strata::train {

// Defaults are the SMoE runs' settings (fairseq's transformer recipes).
struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  double weight_decay = 0.0;
};

namespace detail {

// Per-step constants in the parameter's precision (torch passes Python floats
// to fp32 kernels), computed once on the host for both backends.
template <class T>
struct AdamCoef {
  T b1, one_minus_b1, b2, one_minus_b2, eps, neg_decay, neg_step;
};

// Single IEEE operations, never contracted: on the GPU through the _rn
// intrinsics (nvcc would otherwise fuse a*b+c on its own), on the CPU as
// written (no product below feeds a plain addition, so -ffp-contract has
// nothing left to fuse).
STRATA_HD float adam_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
STRATA_HD double adam_mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
STRATA_HD float adam_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
STRATA_HD double adam_add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
STRATA_HD float adam_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
STRATA_HD double adam_div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
STRATA_HD float adam_sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
STRATA_HD double adam_sqrt(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
STRATA_HD float adam_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
STRATA_HD double adam_fma(double a, double b, double c) {
#ifdef __CUDA_ARCH__
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// One element of fairseq's update, in the order of its torch calls:
// mul_/add_, mul_/addcmul_, sqrt/add, add_ (decay), addcdiv_:
//   m = m*b1 + g*(1-b1);  v = v*b2 + (1-b2)*(g*g);  denom = sqrt(v) + eps
//   p = p + neg_decay*p (only when wd != 0: fairseq skips it, and 0*inf is NaN)
//   p = p + neg_step*(m/denom)
// The fused multiply-adds are spelt out where GCC's default contraction
// (-ffp-contract=fast with FMA) placed them in the original expressions, so
// the CPU results did not change and the GPU kernel reproduces them exactly.
template <class T>
STRATA_HD void adam_element(T& p, T g, T& m, T& v, const AdamCoef<T>& c) {
  m = adam_fma(m, c.b1, adam_mul(g, c.one_minus_b1));
  v = adam_fma(v, c.b2, adam_mul(c.one_minus_b2, adam_mul(g, g)));
  const T denom = adam_add(adam_sqrt(v), c.eps);
  if (c.neg_decay != T(0)) p = adam_fma(c.neg_decay, p, p);
  p = adam_fma(adam_div(m, denom), c.neg_step, p);
}

}  // namespace detail

class Adam {
 public:
  // `params` are f32 (or f64, for tests) leaves with unique names, on the CPU
  // or (CUDA builds) a GPU. State (exp_avg, exp_avg_sq) has each parameter's
  // dtype and device and starts at zero.
  Adam(NamedTensors params, AdamOptions options = {});

  // Updates every parameter that has a gradient, in place.
  void step(double lr);
  // Drops every parameter's gradient.
  void zero_grad();

  // "<name>.exp_avg", "<name>.exp_avg_sq" (the parameter's shape, dtype and
  // device) and "<name>.step" (i64 CPU scalar), per parameter in order. The
  // tensors are the live state: save them (GPU state: .to(Device::cpu())
  // first), do not modify them.
  NamedTensors state_dict() const;
  // Copies a state_dict() back in (from CPU tensors, or tensors already on the
  // parameters' device). Names, shapes and steps are validated before
  // anything is changed; a missing or unexpected entry throws naming it.
  void load_state_dict(const NamedTensors& state);

  const NamedTensors& params() const { return params_; }
  const AdamOptions& options() const { return options_; }
  // Steps taken by parameter i.
  int64_t param_steps(size_t i) const { return steps_.at(i); }

 private:
  NamedTensors params_;
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
};

}  // namespace strata::train
