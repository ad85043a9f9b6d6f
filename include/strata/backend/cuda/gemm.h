// Matrix products on the GPU (cuBLASLt, with cuBLAS as the fallback):
// src/backend/cuda/gemm.cu. Same contracts as include/strata/backend/gemm.h;
// the CPU entry points forward here when their operands are on a GPU.
// Dtypes: f32 (pure fp32 arithmetic, no TF32), f64, and bf16/f16 (16-bit
// storage, fp32 accumulation). Operands whose last or second-last stride is 1
// are read in place (a transposed view becomes a transpose flag); other
// layouts are copied to a contiguous buffer first.
#pragma once
#include <cstdint>

#include "strata/core/tensor.h"

namespace strata::backend::cuda {

// op(a)[M,K] @ op(b)[K,N] -> new contiguous [M,N].
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// out = alpha * op(a) @ op(b) + beta * out; out may be any [M,N] view (a
// view with a unit stride is written in place, anything else through a copy).
void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
               double beta);
// [B,M,K] @ [B,K,N] -> [B,M,N] (strided-batched), transposes on the last two dims.
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y[rows, out] = x2d[rows, in] @ weight[out, in]^T + bias[out], then ReLU when
// `relu` is set, in one cuBLASLt call with a BIAS / RELU_BIAS epilogue where
// cuBLASLt offers one (otherwise the same result from a GEMM plus small
// kernels). bias may be undefined. Not differentiable: strata::linear and
// strata::linear_relu (autograd/ops_linalg.h) call it for GPU inputs.
Tensor linear_forward(const Tensor& x2d, const Tensor& weight, const Tensor& bias, bool relu);

// Throughput of a [m,k] @ [k,n] product of dtype dt on the current GPU in
// TFLOP/s (2*m*n*k per product): a few warm-up products, then `iters` timed
// with CUDA events on the compute stream. For benchmarks (MFU).
double measure_gemm_tflops(DType dt, int64_t m, int64_t n, int64_t k, int iters);

}  // namespace strata::backend::cuda
