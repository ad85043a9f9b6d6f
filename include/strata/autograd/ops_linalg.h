// Differentiable matrix products (forward and backward on backend/gemm.h).
// The transpose flags read an operand transposed without copying it; the
// backward passes use the same flags, so no transposed copy is ever made.
#pragma once
#include "strata/core/tensor.h"

namespace strata {

// op(a)[M,K] @ op(b)[K,N] -> [M,N]; op transposes when its flag is set.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// Batched: [B,M,K] @ [B,K,N] -> [B,M,N], flags transpose the last two dims.
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x[..., in] @ weight[out, in]^T + bias[out] -> [..., out] (PyTorch/fairseq
// layout). bias may be undefined (no bias). On a GPU the bias is added in the
// GEMM's epilogue.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// relu(linear(x, weight, bias)) as one op: on a GPU one GEMM with a fused
// bias+ReLU epilogue, on the CPU linear then relu. The backward masks the
// gradient by output > 0 (relu'(0) = 0, as relu()) and saves only the output
// besides the matmul operands.
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace strata
