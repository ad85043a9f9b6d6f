#include "strata/nn/transformer.h"

#include "strata/autograd/ops.h"
#include "strata/nn/autocast.h"

namespace strata::nn {

Tensor maybe_dropout(const Tensor& x, double p, const ForwardContext& ctx) {
  if (!ctx.training || p <= 0) return x;
  return dropout(x, p, ctx.next_stream(), true);
}

Tensor run_ffn_block(FeedForwardBlock& ffn, const Tensor& x, const Tensor& pad, const ForwardContext& ctx) {
  if (!ffn.is_moe() || !autocast_enabled()) return ffn.forward(x, pad, ctx);
  // Routing must not see 16-bit rounding (ties between experts, capacity
  // drops, the balance loss): the MoE block gets the stream in f32, its gate
  // and softmax stay f32, and its output rejoins the 16-bit stream.
  return cast(ffn.forward(cast(x, DType::F32), pad, ctx), x.dtype());
}

DenseFeedForward::DenseFeedForward(int64_t dim, int64_t ffn_dim, double dropout, double activation_dropout,
                                   double layernorm_eps)
    : dropout_(dropout), activation_dropout_(activation_dropout), final_layer_norm_(dim, layernorm_eps), fc1_(dim, ffn_dim),
      fc2_(ffn_dim, dim) {
  register_module("final_layer_norm", &final_layer_norm_);
  register_module("fc1", &fc1_);
  register_module("fc2", &fc2_);
}

Tensor DenseFeedForward::forward(const Tensor& x, const Tensor& pad, const ForwardContext& ctx) {
  Tensor h = fc1_.forward_relu(final_layer_norm_.forward(x));
  h = maybe_dropout(h, activation_dropout_, ctx);
  h = maybe_dropout(fc2_.forward(h), dropout_, ctx);
  return x + h;
}

EncoderLayer::EncoderLayer(const LayerOptions& o, std::unique_ptr<FeedForwardBlock> ffn)
    : dropout_(o.dropout),
      self_attn_(o.dim, o.heads, o.attention_dropout),
      self_attn_layer_norm_(o.dim, o.layernorm_eps),
      ffn_(std::move(ffn)) {
  register_module("self_attn", &self_attn_);
  register_module("self_attn_layer_norm", &self_attn_layer_norm_);
  register_module("", ffn_.get());
}

Tensor EncoderLayer::forward(const Tensor& x, const Tensor& pad, const ForwardContext& ctx) {
  Tensor h = self_attn_layer_norm_.forward(x);
  h = self_attn_.forward(h, h, pad, false, ctx);
  Tensor y = x + maybe_dropout(h, dropout_, ctx);
  return run_ffn_block(*ffn_, y, pad, ctx);
}

DecoderLayer::DecoderLayer(const LayerOptions& o, std::unique_ptr<FeedForwardBlock> ffn)
    : dropout_(o.dropout),
      self_attn_(o.dim, o.heads, o.attention_dropout),
      self_attn_layer_norm_(o.dim, o.layernorm_eps),
      encoder_attn_(o.dim, o.heads, o.attention_dropout),
      encoder_attn_layer_norm_(o.dim, o.layernorm_eps),
      ffn_(std::move(ffn)) {
  register_module("self_attn", &self_attn_);
  register_module("self_attn_layer_norm", &self_attn_layer_norm_);
  register_module("encoder_attn", &encoder_attn_);
  register_module("encoder_attn_layer_norm", &encoder_attn_layer_norm_);
  register_module("", ffn_.get());
}

Tensor DecoderLayer::forward(const Tensor& x, const Tensor& enc, const Tensor& enc_pad, const Tensor& tgt_pad,
                             const ForwardContext& ctx, DecoderLayerCache* cache) {
  Tensor h = self_attn_layer_norm_.forward(x);
  h = self_attn_.forward(h, h, tgt_pad, true, ctx, cache ? &cache->self_attn : nullptr, false);
  Tensor y = x + maybe_dropout(h, dropout_, ctx);
  h = encoder_attn_layer_norm_.forward(y);
  h = encoder_attn_.forward(h, enc, enc_pad, false, ctx, cache ? &cache->encoder_attn : nullptr, true);
  y = y + maybe_dropout(h, dropout_, ctx);
  return run_ffn_block(*ffn_, y, tgt_pad, ctx);
}

}  // namespace strata::nn
