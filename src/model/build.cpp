#include "strata/model/build.h"

#include <cstdio>

namespace strata::model {

std::unique_ptr<TransformerModel> build_model(const config::Config& cfg, int64_t vocab_size, int64_t padding_idx) {
  STRATA_CHECK(!cfg.moe.enabled()) << "model: experts: " << cfg.moe.experts
                                   << " needs the MoE layers, which this build does not have yet; use experts: 0";
  return std::make_unique<TransformerModel>(cfg.model, vocab_size, padding_idx, dense_ffn_factory(cfg.model));
}

namespace {
int64_t linear_params(int64_t in, int64_t out) { return in * out + out; }
int64_t attention_params(int64_t d) { return 4 * linear_params(d, d); }
int64_t ffn_params(int64_t d, int64_t f) { return linear_params(d, f) + linear_params(f, d); }
}  // namespace

int64_t count_parameters(const config::Config& cfg, int64_t vocab) {
  const auto& m = cfg.model;
  const int64_t d = m.embed_dim, f = m.ffn_dim, ln = 2 * d;
  int64_t n = vocab * d;                                             // shared embedding
  n += m.encoder_layers * (attention_params(d) + ffn_params(d, f) + 2 * ln);
  n += m.decoder_layers * (2 * attention_params(d) + ffn_params(d, f) + 3 * ln);
  n += 2 * ln;                                                       // final layer norms
  return n;
}

double flops_per_token(const config::Config& cfg, int64_t vocab, int64_t context) {
  const auto& m = cfg.model;
  const double d = m.embed_dim, f = m.ffn_dim;
  const double attn_weights = 4 * d * d, ffn_weights = 2 * d * f;
  const double attn_context = 2 * double(context) * d;  // QK^T and PV multiply-accumulates
  double macs = m.encoder_layers * (attn_weights + attn_context + ffn_weights);
  macs += m.decoder_layers * (2 * (attn_weights + attn_context) + ffn_weights);
  macs += double(vocab) * d;  // output projection
  return 2 * macs;
}

ModelSummary summarize(const config::Config& cfg, int64_t vocab) {
  ModelSummary s;
  s.parameters = count_parameters(cfg, vocab);
  s.embedding_parameters = vocab * cfg.model.embed_dim;
  s.forward_flops_per_token = flops_per_token(cfg, vocab);
  return s;
}

std::string ModelSummary::str() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%.2fM parameters (%.2fM embedding) | %.1fM forward FLOPs/token", parameters / 1e6,
                embedding_parameters / 1e6, forward_flops_per_token / 1e6);
  return buf;
}

}  // namespace strata::model
