#include "strata/model/transformer_model.h"

#include <cmath>

#include "strata/autograd/ops.h"
#include "strata/nn/autocast.h"

namespace strata::model {

FfnFactory dense_ffn_factory(const config::ModelOptions& o) {
  return [o](bool, int) -> std::unique_ptr<nn::FeedForwardBlock> {
    return std::make_unique<nn::DenseFeedForward>(o.embed_dim, o.ffn_dim, o.dropout, o.activation_dropout,
                                                  o.layernorm_eps);
  };
}

void DecoderState::reorder(const Tensor& order) {
  // One transfer for all layers when the caches live on another device.
  Tensor idx = order;
  for (auto& l : layers)
    if (l.self_attn.defined() && l.self_attn.k.device() != idx.device()) {
      idx = idx.to(l.self_attn.k.device());
      break;
    }
  for (auto& l : layers) l.reorder(idx);
}

TransformerModel::TransformerModel(const config::ModelOptions& o, int64_t vocab_size, int64_t padding_idx,
                                   FfnFactory ffn)
    : opt_(o),
      vocab_(vocab_size),
      pad_(padding_idx),
      embed_tokens_(vocab_size, o.embed_dim, padding_idx),
      encoder_(o.embed_dim, o.layernorm_eps),
      decoder_(o.embed_dim, o.layernorm_eps) {
  STRATA_CHECK(o.share_all_embeddings)
      << "model: share_all_embeddings: false is not supported (the joint SentencePiece vocabulary is shared)";
  STRATA_CHECK(vocab_size > padding_idx && padding_idx >= 0)
      << "model: vocabulary of " << vocab_size << " with padding index " << padding_idx;
  nn::LayerOptions lo{o.embed_dim, o.attention_heads, o.dropout, o.attention_dropout, o.layernorm_eps};
  for (int i = 0; i < o.encoder_layers; ++i)
    encoder_.layers.push_back(std::make_unique<nn::EncoderLayer>(lo, ffn(false, i)));
  for (int i = 0; i < o.decoder_layers; ++i)
    decoder_.layers.push_back(std::make_unique<nn::DecoderLayer>(lo, ffn(true, i)));
  encoder_.finish();
  decoder_.finish();
  register_module("encoder.embed_tokens", &embed_tokens_);
  register_module("encoder", &encoder_);
  register_module("decoder", &decoder_);
  int64_t max_pos = std::max(o.max_source_positions, o.max_target_positions);
  positions_ = nn::sinusoidal_table(max_pos + padding_idx + 1, o.embed_dim, padding_idx);
  register_buffer("positions", positions_);
}

std::vector<nn::EncoderLayer*> TransformerModel::encoder_layers() {
  std::vector<nn::EncoderLayer*> out;
  for (auto& l : encoder_.layers) out.push_back(static_cast<nn::EncoderLayer*>(l.get()));
  return out;
}

std::vector<nn::DecoderLayer*> TransformerModel::decoder_layers() {
  std::vector<nn::DecoderLayer*> out;
  for (auto& l : decoder_.layers) out.push_back(static_cast<nn::DecoderLayer*>(l.get()));
  return out;
}

namespace {
// 1 at padding positions, as f32 [B, T] (host).
Tensor padding_mask(const Tensor& ids, int64_t pad) {
  Tensor c = ids.to(DType::I64).contiguous();
  Tensor m = Tensor::empty(c.shape(), DType::F32);
  const int64_t* p = c.data<int64_t>();
  float* o = m.data<float>();
  for (int64_t i = 0; i < c.numel(); ++i) o[i] = p[i] == pad ? 1.f : 0.f;
  return m;
}
}  // namespace

TransformerModel::Input TransformerModel::prepare(const Tensor& ids, int64_t max_positions, int64_t start,
                                                  bool with_pad) const {
  STRATA_CHECK(ids.dim() == 2) << "model: token ids must be [batch, time], got " << ids.str();
  STRATA_CHECK(start + ids.size(1) <= max_positions)
      << "model: sequence of " << start + ids.size(1) << " tokens exceeds the " << max_positions
      << " positions the model was configured for";
  // Positions and the padding mask are computed from a host copy of the ids
  // (small) and sent to the model's device once, with the ids.
  const Device dev = positions_.device();
  const Tensor host = ids.device().is_cpu() ? ids : ids.to(Device::cpu());
  Input in;
  in.ids = ids.device() == dev ? ids : ids.to(dev);
  in.positions = nn::make_positions(host, pad_, start).to(dev);
  if (with_pad) in.pad = padding_mask(host, pad_).to(dev);
  return in;
}

Tensor TransformerModel::embed(const Input& in, const nn::ForwardContext& ctx) {
  Tensor x = embed_tokens_.forward(in.ids) * std::sqrt(double(opt_.embed_dim));
  Tensor pos = nn::autocast(embedding(positions_, in.positions, -1));
  return nn::maybe_dropout(x + pos, opt_.dropout, ctx);
}

EncoderOutput TransformerModel::encode(const Tensor& src_ids, const nn::ForwardContext& ctx) {
  return encode(prepare(src_ids, opt_.max_source_positions, 0), ctx);
}

EncoderOutput TransformerModel::encode(const Input& src, const nn::ForwardContext& ctx) {
  EncoderOutput e;
  e.pad = src.pad;
  Tensor x = embed(src, ctx);
  for (auto* layer : encoder_layers()) x = layer->forward(x, e.pad, ctx);
  e.out = encoder_.layer_norm.forward(x);
  return e;
}

Tensor TransformerModel::decoder_body(const Tensor& x_in, const EncoderOutput& enc, const Tensor& tgt_pad,
                                      const nn::ForwardContext& ctx, DecoderState* state) {
  Tensor x = x_in;
  auto layers = decoder_layers();
  for (size_t i = 0; i < layers.size(); ++i)
    x = layers[i]->forward(x, enc.out, enc.pad, tgt_pad, ctx, state ? &state->layers[i] : nullptr);
  x = decoder_.layer_norm.forward(x);
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2);
  Tensor logits = linear(reshape(x, {B * T, d}), nn::autocast(embed_tokens_.weight()), Tensor());
  // The loss (and beam search) read f32 logits whatever the compute dtype.
  if (nn::autocast_enabled()) logits = cast(logits, DType::F32);
  return reshape(logits, {B, T, vocab_});
}

Tensor TransformerModel::decode(const Tensor& prev_ids, const EncoderOutput& enc, const nn::ForwardContext& ctx) {
  return decode(prepare(prev_ids, opt_.max_target_positions, 0), enc, ctx);
}

Tensor TransformerModel::decode(const Input& prev, const EncoderOutput& enc, const nn::ForwardContext& ctx) {
  Tensor x = embed(prev, ctx);
  return decoder_body(x, enc, prev.pad, ctx, nullptr);
}

Tensor TransformerModel::forward(const Tensor& src_ids, const Tensor& prev_ids, const nn::ForwardContext& ctx) {
  // Both sides' inputs first: their host-to-device copies then wait for an
  // idle GPU instead of for the encoder's queued kernels.
  const Input src = prepare(src_ids, opt_.max_source_positions, 0);
  const Input prev = prepare(prev_ids, opt_.max_target_positions, 0);
  return decode(prev, encode(src, ctx), ctx);
}

Tensor TransformerModel::decode_step(const Tensor& last_ids, const EncoderOutput& enc, DecoderState& state,
                                     const nn::ForwardContext& ctx) {
  STRATA_CHECK(last_ids.dim() == 2 && last_ids.size(1) == 1)
      << "decode_step: expects one token per sentence [batch, 1], got " << last_ids.str();
  if (state.layers.empty()) state.layers.resize(decoder_.layers.size());
  // Incremental steps mask nothing: the cache holds only real earlier steps.
  Tensor x = embed(prepare(last_ids, opt_.max_target_positions, state.steps, false), ctx);
  ++state.steps;
  return decoder_body(x, enc, Tensor(), ctx, &state);
}

}  // namespace strata::model
