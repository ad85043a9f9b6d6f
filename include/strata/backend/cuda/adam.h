// GPU kernels of the optimizer step: the fused Adam update, the gradients'
// sum of squares (for the norm and clipping), scaling gradients in place and
// the finiteness check of mixed-precision training. Called by
// src/train/adam.cpp, grad_clip.cpp and loss_scaler.cpp for tensors on a GPU;
// everything runs on cuda::compute_stream(). Only for CUDA builds.
#pragma once
#include <vector>

#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// Adam's per-step constants (see train::detail::AdamCoef), in double; the
// kernel rounds them to the parameter's precision exactly as the CPU does.
struct AdamStepCoef {
  double b1, one_minus_b1, b2, one_minus_b2, eps, neg_decay, neg_step;
};

// One fused pass over a parameter: param, exp_avg and exp_avg_sq updated in
// place. param: f32/f64 (any strides); exp_avg/exp_avg_sq: contiguous, the
// param's shape and dtype; grad: the param's shape (any strides), f32, f64,
// bf16 or f16 (widened to the param's dtype per element). All on one GPU.
void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const AdamStepCoef& coef);

// Sum over every tensor of sum(x^2), accumulated in f64 on the device in a
// fixed order (the same bits on every call); one host read at the end.
// Floating tensors of any dtype and strides, all on one GPU; undefined ones
// are skipped.
double sum_squares(const std::vector<Tensor>& tensors);

// x *= coef in place, computed in f32 for f32/bf16/f16 and f64 for f64 (as
// the CPU's scale_grads). Any strides.
void scale_grad(const Tensor& x, double coef);

// True when no element of any (floating) tensor is NaN or +-inf: one flag on
// the device set by whichever element fails, one host read.
bool all_finite(const std::vector<Tensor>& tensors);

}  // namespace strata::backend::cuda
