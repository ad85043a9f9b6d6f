// The encoder-decoder translation model: shared token embeddings (scaled by
// sqrt(d)) plus fixed sinusoidal positions, pre-norm encoder and decoder
// stacks with a final LayerNorm each, and an output projection tied to the
// embeddings. FFN blocks come from a factory so MoE layers can sit in the
// slots chosen by moe_freq.
//
// Devices: after model.to(device) the token ids may be given on the host or
// on that device; the model moves them (with their positions and padding
// masks) itself, and its outputs (logits, EncoderOutput) live on the device.
// Under a 16-bit nn::AutocastGuard the stream is 16-bit and the logits come
// back in f32.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "strata/config/options.h"
#include "strata/nn/transformer.h"

namespace strata::model {

// Builds the FFN block of one layer; `decoder` and `layer` (0-based) locate it.
using FfnFactory = std::function<std::unique_ptr<nn::FeedForwardBlock>(bool decoder, int layer)>;

// The dense FFN everywhere.
FfnFactory dense_ffn_factory(const config::ModelOptions& o);

struct EncoderOutput {
  Tensor out;  // [B, S, d] after the final LayerNorm
  Tensor pad;  // [B, S] f32, 1 at padding positions (on the model's device)
};

// Incremental decoding state: one cache per decoder layer plus the step count.
struct DecoderState {
  std::vector<nn::DecoderLayerCache> layers;
  int64_t steps = 0;
  void reorder(const Tensor& order);
};

class TransformerModel : public nn::Module {
 public:
  TransformerModel(const config::ModelOptions& o, int64_t vocab_size, int64_t padding_idx, FfnFactory ffn);

  EncoderOutput encode(const Tensor& src_ids, const nn::ForwardContext& ctx);
  // prev_ids [B, T] -> logits [B, T, V] (teacher forcing).
  Tensor decode(const Tensor& prev_ids, const EncoderOutput& enc, const nn::ForwardContext& ctx);
  // One incremental step: last_ids [B, 1] -> logits [B, 1, V]; updates `state`.
  Tensor decode_step(const Tensor& last_ids, const EncoderOutput& enc, DecoderState& state,
                     const nn::ForwardContext& ctx);
  Tensor forward(const Tensor& src_ids, const Tensor& prev_ids, const nn::ForwardContext& ctx);

  int64_t vocab_size() const { return vocab_; }
  int64_t padding_idx() const { return pad_; }
  const config::ModelOptions& options() const { return opt_; }
  std::vector<nn::EncoderLayer*> encoder_layers();
  std::vector<nn::DecoderLayer*> decoder_layers();

 private:
  // One side's token ids with their positions and padding mask [B, T] f32
  // (1 = pad), all on the model's device.
  struct Input {
    Tensor ids, positions, pad;
  };
  Input prepare(const Tensor& ids, int64_t max_positions, int64_t start, bool with_pad = true) const;
  EncoderOutput encode(const Input& src, const nn::ForwardContext& ctx);
  Tensor decode(const Input& prev, const EncoderOutput& enc, const nn::ForwardContext& ctx);
  Tensor embed(const Input& in, const nn::ForwardContext& ctx);
  Tensor decoder_body(const Tensor& x, const EncoderOutput& enc, const Tensor& tgt_pad, const nn::ForwardContext& ctx,
                      DecoderState* state);

  config::ModelOptions opt_;
  int64_t vocab_, pad_;
  nn::Embedding embed_tokens_;
  Tensor positions_;  // fixed table [max_positions + pad + 1, d]
  struct Stack : nn::Module {
    std::vector<std::unique_ptr<nn::Module>> layers;
    nn::LayerNorm layer_norm;
    Stack(int64_t dim, double eps) : layer_norm(dim, eps) {}
    void finish() {
      for (size_t i = 0; i < layers.size(); ++i) register_module("layers." + std::to_string(i), layers[i].get());
      register_module("layer_norm", &layer_norm);
    }
  };
  Stack encoder_, decoder_;
};

}  // namespace strata::model
