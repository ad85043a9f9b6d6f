// Pre-norm transformer layers (fairseq with --encoder/decoder-normalize-before).
// The FFN sub-block is pluggable: a layer owns a FeedForwardBlock that takes
// the residual stream and returns it updated, so dense FFNs and MoE blocks
// (whose stratified form handles the residual and its layer norms itself)
// fit the same slot.
#pragma once
#include <memory>

#include "strata/nn/attention.h"

namespace strata::nn {

class FeedForwardBlock : public Module {
 public:
  // x: [B, T, d] residual stream before the FFN sub-block; pad: [B, T]
  // (nonzero = padding token) or undefined. Returns the stream after it.
  virtual Tensor forward(const Tensor& x, const Tensor& pad, const ForwardContext& ctx) = 0;
  virtual bool is_moe() const { return false; }
};

// LN -> fc1 -> ReLU -> activation dropout -> fc2 -> dropout -> + residual.
class DenseFeedForward : public FeedForwardBlock {
 public:
  DenseFeedForward(int64_t dim, int64_t ffn_dim, double dropout, double activation_dropout,
                   double layernorm_eps = 1e-5);
  Tensor forward(const Tensor& x, const Tensor& pad, const ForwardContext& ctx) override;

 private:
  double dropout_, activation_dropout_;
  LayerNorm final_layer_norm_;
  Linear fc1_, fc2_;
};

// The FFN slot of a layer: ffn.forward(x, pad, ctx), except that under a
// 16-bit autocast an MoE block gets x in f32 (its gate, softmax and routing
// stay f32) and its output is cast back to x's dtype.
Tensor run_ffn_block(FeedForwardBlock& ffn, const Tensor& x, const Tensor& pad, const ForwardContext& ctx);

// Dropout that is the identity outside training (and for p = 0).
Tensor maybe_dropout(const Tensor& x, double p, const ForwardContext& ctx);

struct LayerOptions {
  int64_t dim = 512;
  int64_t heads = 8;
  double dropout = 0.1;
  double attention_dropout = 0.0;
  double layernorm_eps = 1e-5;
};

class EncoderLayer : public Module {
 public:
  EncoderLayer(const LayerOptions& o, std::unique_ptr<FeedForwardBlock> ffn);
  Tensor forward(const Tensor& x, const Tensor& pad, const ForwardContext& ctx);
  FeedForwardBlock& ffn() { return *ffn_; }

 private:
  double dropout_;
  MultiheadAttention self_attn_;
  LayerNorm self_attn_layer_norm_;
  std::unique_ptr<FeedForwardBlock> ffn_;
};

// Per-layer decoder state for incremental decoding.
struct DecoderLayerCache {
  AttentionCache self_attn, encoder_attn;
  void reorder(const Tensor& order) {
    self_attn.reorder(order);
    encoder_attn.reorder(order);
  }
};

class DecoderLayer : public Module {
 public:
  DecoderLayer(const LayerOptions& o, std::unique_ptr<FeedForwardBlock> ffn);
  // x [B, T, d]; enc [B, S, d]; enc_pad [B, S]; tgt_pad [B, T] (undefined when
  // decoding incrementally). With a cache, x holds only the newest step.
  Tensor forward(const Tensor& x, const Tensor& enc, const Tensor& enc_pad, const Tensor& tgt_pad,
                 const ForwardContext& ctx, DecoderLayerCache* cache = nullptr);
  FeedForwardBlock& ffn() { return *ffn_; }

 private:
  double dropout_;
  MultiheadAttention self_attn_;
  LayerNorm self_attn_layer_norm_;
  MultiheadAttention encoder_attn_;
  LayerNorm encoder_attn_layer_norm_;
  std::unique_ptr<FeedForwardBlock> ffn_;
};

}  // namespace strata::nn
