// cuDNN's fused flash attention, built with the cuDNN backend (graph) API
// (src/backend/cuda/cudnn_attention.cu): the forward graph with softmax
// statistics and the backward graph that cuDNN's runtime-fusion flash
// attention engines recognise. strata::scaled_dot_product_attention
// (autograd/ops_attention.h) tries it first where the policy and the inputs
// allow, and falls back to Strata's fused kernels (backend/cuda/attention.h)
// when cuDNN cannot take a case. Only for CUDA builds (STRATA_WITH_CUDA).
//
// Semantics are those of backend/cuda/attention.h without dropout: scores
// s = scale * q k^T, key j hidden from query i when key_padding[b][j] != 0
// or, with causality, when j > i + causal_offset; a query that sees no key
// gets a zero output row, zero gradients and lse = -inf. lse is the same
// quantity as the fused kernel's (log of the softmax denominator with the
// row maximum folded in), so either implementation's backward can continue
// from the other's forward.
//
// Policy: environment variable STRATA_ATTENTION, read on every call:
//   auto   (default, also when unset or empty) cuDNN where it works and no
//          backward follows (evaluation, scoring, the encoder and the first
//          step of decoding), else Strata's fused kernel;
//   cudnn  require cuDNN: a GPU case it cannot take is a one-line error
//          naming the reason;
//   strata never cuDNN.
// Anything else throws, naming the variable.
//
// Conditions for cuDNN: q, k, v on a CUDA device, bf16 or f16, head dim
// D % 8 == 0 and D <= 128, compute capability >= 8.0, cuDNN runtime >= 9.0
// (and not 9.10.0/9.10.1, whose attention has known bugs), dropout off
// (Strata's dropout draws come from the Philox stream at the composed path's
// element indices, which cuDNN's RNG cannot reproduce), and a causal mask
// only as offset 0 with Tq == Tk or as offset Tk - Tq (bottom-right, Tq <= Tk;
// with no key padding, and below cuDNN 9.6 only for Tq, Tk multiples of 64).
// An offset >= Tk - 1 hides nothing and counts as no mask.
//
// Any cuDNN status other than success while building a graph or plan makes
// the case unavailable: the call returns nullopt, the failure is remembered
// for that graph (not retried) and its reason is logged once to stderr.
// Failures while executing a finished plan throw (STRATA_CUDNN_CHECK).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "strata/backend/cuda/attention.h"
#include "strata/core/tensor.h"

namespace strata::backend::cuda {

enum class AttentionPolicy { Auto, Cudnn, Strata };

// STRATA_ATTENTION parsed (see above); throws naming the variable when malformed.
AttentionPolicy attention_policy();

// Why cuDNN cannot take these inputs (one line), or "" when it may be tried.
// dropout_p is the effective probability (0 when not training).
std::string cudnn_attention_refusal(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                    double dropout_p);

// Whether scaled_dot_product_attention should try cuDNN for these inputs under
// the policy: false for CPU tensors (whatever the policy) and under "strata";
// under "auto" true when nothing refuses, no backward will follow
// (with_backward: autograd records the call; cuDNN's backward accumulates dq
// with atomics, so training under auto keeps the fused kernel's deterministic
// backward), Strata's fused kernel also takes the inputs and there is more
// than one query (a single-query call is an incremental decoding step, whose
// key length grows every step: each would build a new plan); under "cudnn"
// true, training included, or a one-line error naming the refusal.
bool cudnn_attention_selected(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                              double dropout_p, bool with_backward);

// Forward with cuDNN (no dropout): out [B, H, Tq, D] in q's dtype and lse
// [B, H, Tq] f32, both contiguous, as fused_attention_forward returns them.
// nullopt when cuDNN cannot take the case; *why (when given) then says why.
std::optional<FusedAttentionForward> cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                             const AttentionMask& mask, double scale,
                                                             std::string* why = nullptr);

// Backward with cuDNN from grad_out (q's shape and dtype, any strides), the
// inputs, the forward's out and lse (from either implementation). dq, dk, dv
// contiguous in the inputs' dtype. nullopt (with *why) when cuDNN cannot take
// the case. Not bit-deterministic: cuDNN accumulates dq with atomics.
std::optional<FusedAttentionGrads> cudnn_attention_backward(const Tensor& grad_out, const Tensor& q,
                                                            const Tensor& k, const Tensor& v, const Tensor& out,
                                                            const Tensor& lse, const AttentionMask& mask,
                                                            double scale, std::string* why = nullptr);

// Plan cache counters since the process started (for benchmarks and tests).
struct CudnnAttentionCounters {
  int64_t plans_built = 0;     // execution plans finalized and cached
  int64_t cache_hits = 0;      // calls that found their plan cached
  int64_t build_failures = 0;  // graphs cuDNN turned down (each remembered, not retried)
  double build_seconds = 0;    // wall time spent building, failures included
  int64_t cached = 0;          // plans in the cache now (at most kCudnnPlanCacheSize)
};
constexpr int64_t kCudnnPlanCacheSize = 128;
CudnnAttentionCounters cudnn_attention_counters();

// cudnnGetVersion() of the loaded library, e.g. 90100 for 9.1.0.
int64_t cudnn_runtime_version();

}  // namespace strata::backend::cuda
