// Fused multi-head attention on the GPU (src/backend/cuda/attention.cu),
// flash-attention style: the [Tq, Tk] score matrix never reaches global
// memory. Not differentiable by itself: strata::scaled_dot_product_attention
// (autograd/ops_attention.h) calls the forward, saves its log-sum-exp and
// calls the backward; the CPU and the cases this file does not cover take the
// composed path there. Only for CUDA builds (STRATA_WITH_CUDA).
//
// Semantics (those of the composed path): scores s = scale * q k^T per
// (batch, head); key j is hidden from query i when key_padding[b][j] != 0 or,
// with `causal`, when j > i + causal_offset; probabilities softmax(s) over the
// visible keys (a query that sees no key gets all-zero probabilities, so a
// zero output row and zero gradients); dropout multiplies probability (i, j)
// of head (b, h) by 0 or 1/(1-p) (rounded to the input dtype, as the dropout
// mask is), dropping it iff stream.uniform(((b*H + h)*Tq + i)*Tk + j) < p;
// out = probs @ v. Arithmetic is f32 for f32/bf16/f16 inputs.
#pragma once
#include <cstdint>

#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

struct AttentionMask {
  Tensor key_padding;  // [B, Tk], any dtype, nonzero = hidden; undefined = none; on the inputs' device
  bool causal = false;
  int64_t causal_offset = 0;  // query i sees keys j <= i + causal_offset
};

// True when the fused kernels take these inputs: q [B, H, Tq, D] and k, v
// [B, H, Tk, D] on a CUDA device, f32/bf16/f16, 1 <= D <= 128 (any strides),
// and the device lets a block have the kernels' shared memory for D (up to
// ~103 KiB: false on 99 KiB parts for 32 < D <= 64).
bool fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v);

struct FusedAttentionForward {
  Tensor out;  // [B, H, Tq, D], q's dtype, contiguous
  Tensor lse;  // [B, H, Tq] f32: log of each row's softmax denominator (with the max folded in); -inf for a row that sees no key
};

// dropout_p = 0 turns dropout off (pass 0 when not training).
FusedAttentionForward fused_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const AttentionMask& mask, double scale, double dropout_p,
                                              const PhiloxStream& stream);

struct FusedAttentionGrads {
  Tensor dq, dk, dv;  // shapes of q, k, v; their dtype; contiguous
};

// Gradients from grad_out [B, H, Tq, D] (any strides, q's dtype) and the
// forward's lse, recomputing the probabilities tile by tile. Deterministic
// (no atomics): one kernel makes dq per query tile, a second dk/dv per key
// tile.
FusedAttentionGrads fused_attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& lse, const AttentionMask& mask,
                                             double scale, double dropout_p, const PhiloxStream& stream);

}  // namespace strata::backend::cuda
