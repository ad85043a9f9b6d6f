// Multi-head scaled dot-product attention (fairseq's MultiheadAttention:
// separate q/k/v/out projections with biases, q scaled by head_dim^-1/2,
// softmax in the input dtype, dropout on the attention probabilities).
// The attention itself is scaled_dot_product_attention (fused kernels on a
// GPU, the composed ops on the CPU). Works on whichever device the
// projections live on; under a 16-bit nn::AutocastGuard it runs on 16-bit
// q/k/v (f32 statistics in the kernels).
#pragma once
#include "strata/nn/layers.h"

namespace strata::nn {

// Keys and values of earlier decoding steps ([B, H, T, head_dim] each).
struct AttentionCache {
  Tensor k, v;
  bool defined() const { return k.defined(); }
  // Keeps the rows of the batch given by `order` (beam search reordering).
  void reorder(const Tensor& order);
};

class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t dim, int64_t heads, double attention_dropout);

  // query [B, Tq, d]; kv [B, Tk, d]; key_padding [B, Tk] (nonzero = pad) or
  // undefined; causal masks key j > query i. With a cache: self-attention
  // appends this step's keys/values (causal is then implied by the cache);
  // cross-attention (static_kv) computes them once and reuses them.
  Tensor forward(const Tensor& query, const Tensor& kv, const Tensor& key_padding, bool causal,
                 const ForwardContext& ctx, AttentionCache* cache = nullptr, bool static_kv = false) const;

  int64_t heads() const { return heads_; }

 private:
  Tensor split_heads(const Tensor& x) const;  // [B, T, d] -> [B, H, T, dh]
  int64_t dim_, heads_, head_dim_;
  double attention_dropout_;
  Linear k_proj_, v_proj_, q_proj_, out_proj_;
};

}  // namespace strata::nn
