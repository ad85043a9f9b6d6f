// Matrix products (CPU: OpenBLAS sgemm/dgemm, src/backend/cpu/gemm.cpp).
// Operands may be transposed views: a transposed contiguous matrix is passed
// to BLAS as a transpose flag rather than copied.
#pragma once
#include "strata/core/tensor.h"

namespace strata::backend {

// op(a)[M,K] @ op(b)[K,N] -> [M,N], op = transpose when the flag is set.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// out = alpha * op(a) @ op(b) + beta * out (out contiguous, [M,N]).
void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
               double beta);
// Batched: [B,M,K] @ [B,K,N] -> [B,M,N] with per-operand transposes of the last two dims.
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

}  // namespace strata::backend
