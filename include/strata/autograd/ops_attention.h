// Differentiable scaled dot-product attention (src/autograd/ops_attention.cpp).
//
// q [B, H, Tq, D], k and v [B, H, Tk, D] (same dtype and device, any strides)
// -> [B, H, Tq, D]:
//   scores = bmm(q, k^T) * scale                  (no multiply when scale == 1)
//   scores[b, h, i, j] = -inf where key_padding[b, j] != 0,
//                        then where causal and j > i + causal_offset
//   probs  = softmax(scores, -1)                  (a row with every key hidden: all zeros)
//   probs  = dropout(probs, dropout_p, stream)    (training only; element index =
//                                                  position in the [B*H, Tq, Tk] probabilities)
//   out    = bmm(probs, v)
// key_padding is [B, Tk] of any dtype (nonzero = padded) or undefined; it is
// moved to the inputs' device when it lives elsewhere. causal_offset is
// Tk - Tq when the queries are the last Tq positions (incremental decoding).
//
// On the CPU (and on a GPU for the inputs the fused kernels do not take:
// f64, D > 128) this is exactly that composed sequence of autograd ops, so it
// reproduces MultiheadAttention's composed attention bit for bit when called
// with the same (pre-scaled q, scale 1) inputs. On a GPU the order is:
//  1. cuDNN's fused flash attention (backend/cuda/cudnn_attention.h) when the
//     STRATA_ATTENTION policy selects it (auto, the default: wherever cuDNN
//     takes the case and autograd records no backward, single-query decoding
//     steps excepted, so training keeps the fused kernels' deterministic
//     backward; cudnn: always, else a one-line error; strata: never)
//     and its graph builds: bf16/f16, D % 8 == 0, D <= 128, compute
//     capability 8.0+, cuDNN 9, dropout off (cuDNN cannot draw Strata's
//     Philox dropout), causal offset 0 with Tq == Tk or Tk - Tq. Its node's
//     backward is cuDNN's, or the fused kernels' from the same lse where cuDNN
//     turns the backward graph down. cuDNN rounds the probabilities (and dS)
//     to the 16-bit type before the second matmuls, as flash attention does;
//  2. the fused kernels of backend/cuda/attention.h for f32/bf16/f16 with
//     D <= 128 (same masks and the same dropout draws; f32 arithmetic, so
//     equal to the composed result to rounding);
//  3. the composed ops.
#pragma once
#include <cstdint>

#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding,
                                    bool causal, int64_t causal_offset, double dropout_p, const PhiloxStream& stream,
                                    bool training, double scale);

// The composed sequence above on any device, never the fused kernels: the
// CPU path and the GPU fallback, exposed for tests and benchmarks.
Tensor scaled_dot_product_attention_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& key_padding, bool causal, int64_t causal_offset,
                                             double dropout_p, const PhiloxStream& stream, bool training,
                                             double scale);

}  // namespace strata
