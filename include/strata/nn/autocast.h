// Mixed precision in the style of PyTorch's autocast: a thread-local compute
// dtype that the layers consult. F32 (the default, and always on the CPU)
// changes nothing. Under BF16/F16 the parameters stay f32 (the optimizer's
// master weights) and are cast per forward, so their gradients come back in
// f32 through the cast's backward:
//   - Linear casts its input, weight and bias to the compute dtype;
//   - Embedding outputs and the positional rows are cast to it;
//   - LayerNorm takes the 16-bit stream and returns the compute dtype
//     (gamma/beta cast; the GPU kernel keeps f32 statistics);
//   - attention scores and softmax run on 16-bit tensors (f32 statistics in
//     the GPU kernel);
//   - MoE blocks receive the residual stream in f32 (gate logits, softmax,
//     routing and the balance loss stay f32) and hand back the compute dtype;
//   - the output projection's logits reach the loss in f32.
#pragma once
#include "strata/core/tensor.h"

namespace strata::nn {

// The compute dtype of the current thread: F32 unless an AutocastGuard is live.
DType autocast_dtype();
// True when the compute dtype is a 16-bit float (BF16 or F16).
bool autocast_enabled();

// Sets the compute dtype (F32, BF16 or F16) for its scope; nests, and the
// destructor restores the previous one.
class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};

// x cast (differentiably) to the compute dtype when autocast is enabled and x
// is a floating tensor of another dtype; x itself otherwise (and for undefined x).
Tensor autocast(const Tensor& x);

}  // namespace strata::nn
