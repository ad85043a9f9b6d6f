#include "strata/model/build.h"

#include <cstdio>

#include "strata/moe/moe_block.h"

namespace strata::model {

namespace {
dist::Communicator& local_communicator() {
  static dist::LocalCommunicator local;
  return local;
}
}  // namespace

FfnFactory ffn_factory(const config::Config& cfg, dist::Communicator* comm) {
  FfnFactory dense = dense_ffn_factory(cfg.model);
  if (!cfg.moe.enabled()) return dense;
  dist::Communicator* c = comm ? comm : &local_communicator();
  return [cfg, c, dense](bool decoder, int layer) -> std::unique_ptr<nn::FeedForwardBlock> {
    if (!cfg.moe.is_moe_layer(decoder, layer)) return dense(decoder, layer);
    return std::make_unique<moe::MoEBlock>(moe::block_spec(cfg, decoder, layer), *c);
  };
}

std::unique_ptr<TransformerModel> build_model(const config::Config& cfg, int64_t vocab_size, int64_t padding_idx,
                                              dist::Communicator* comm) {
  return std::make_unique<TransformerModel>(cfg.model, vocab_size, padding_idx, ffn_factory(cfg, comm));
}

std::vector<moe::MoEBlock*> moe_blocks(TransformerModel& model) {
  std::vector<moe::MoEBlock*> out;
  for (auto* l : model.encoder_layers())
    if (auto* b = dynamic_cast<moe::MoEBlock*>(&l->ffn())) out.push_back(b);
  for (auto* l : model.decoder_layers())
    if (auto* b = dynamic_cast<moe::MoEBlock*>(&l->ffn())) out.push_back(b);
  return out;
}

void set_moe_eval_capacity(TransformerModel& model, std::optional<double> fraction) {
  for (auto* b : moe_blocks(model)) b->set_eval_capacity_fraction(fraction);
}

std::vector<double> expected_stratum_visits(const std::vector<int>& strata) {
  const size_t L = strata.size();
  std::vector<int> visible(L, 0);  // V_i = experts in strata i..L-1
  for (size_t i = L; i-- > 0;) visible[i] = strata[i] + (i + 1 < L ? visible[i + 1] : 0);
  std::vector<double> p(L, 0.0);
  if (L == 0) return p;
  p[0] = 1.0;
  for (size_t j = 1; j < L; ++j)
    for (size_t i = 0; i < j; ++i) p[j] += p[i] * double(strata[j - 1]) / double(visible[i]);
  return p;
}

namespace {
int64_t linear_params(int64_t in, int64_t out) { return in * out + out; }
int64_t attention_params(int64_t d) { return 4 * linear_params(d, d); }
int64_t ffn_params(int64_t d, int64_t f) { return linear_params(d, f) + linear_params(f, d); }

// The parameters of an FFN slot without its pre-FFN LayerNorm (counted with the layer).
int64_t ffn_slot_params(const config::Config& cfg, bool decoder, int layer) {
  const int64_t d = cfg.model.embed_dim, f = cfg.model.ffn_dim;
  if (!cfg.moe.is_moe_layer(decoder, layer)) return ffn_params(d, f);
  const moe::BlockSpec s = moe::block_spec(cfg, decoder, layer);
  const int64_t E = s.experts();
  int64_t n = E * ffn_params(d, f);                                              // experts
  for (int i = 0; i < s.num_strata(); ++i) n += (E - s.stratum_offset(i)) * d;  // gates, no bias
  if (s.has_hmoe_layernorms()) n += int64_t(s.num_strata()) * 2 * d;
  if (s.cmr) n += ffn_params(d, f) + linear_params(d, 1);  // shared FFN and the CMR gate
  return n;
}

// Multiply-accumulates of one FFN slot per token.
double ffn_slot_macs(const config::Config& cfg, bool decoder, int layer) {
  const double d = cfg.model.embed_dim, f = cfg.model.ffn_dim, ffn = 2 * d * f;
  if (!cfg.moe.is_moe_layer(decoder, layer)) return ffn;
  const moe::BlockSpec s = moe::block_spec(cfg, decoder, layer);
  const std::vector<double> p = expected_stratum_visits(s.strata);
  const double k = s.gate.top1 ? 1 : 2;
  double macs = 0;
  for (int i = 0; i < s.num_strata(); ++i) macs += p[size_t(i)] * (d * (s.experts() - s.stratum_offset(i)) + k * ffn);
  if (s.cmr) macs += ffn + d;
  return macs;
}
}  // namespace

int64_t count_parameters(const config::Config& cfg, int64_t vocab) {
  const auto& m = cfg.model;
  const int64_t d = m.embed_dim, ln = 2 * d;
  int64_t n = vocab * d;  // shared embedding
  for (int i = 0; i < m.encoder_layers; ++i) n += attention_params(d) + ffn_slot_params(cfg, false, i) + 2 * ln;
  for (int i = 0; i < m.decoder_layers; ++i) n += 2 * attention_params(d) + ffn_slot_params(cfg, true, i) + 3 * ln;
  n += 2 * ln;  // final layer norms
  return n;
}

double flops_per_token(const config::Config& cfg, int64_t vocab, int64_t context) {
  const auto& m = cfg.model;
  const double d = m.embed_dim;
  const double attn_weights = 4 * d * d;
  const double attn_context = 2 * double(context) * d;  // QK^T and PV multiply-accumulates
  double macs = 0;
  for (int i = 0; i < m.encoder_layers; ++i) macs += attn_weights + attn_context + ffn_slot_macs(cfg, false, i);
  for (int i = 0; i < m.decoder_layers; ++i) macs += 2 * (attn_weights + attn_context) + ffn_slot_macs(cfg, true, i);
  macs += double(vocab) * d;  // output projection
  return 2 * macs;
}

ModelSummary summarize(const config::Config& cfg, int64_t vocab) {
  ModelSummary s;
  s.parameters = count_parameters(cfg, vocab);
  s.embedding_parameters = vocab * cfg.model.embed_dim;
  s.forward_flops_per_token = flops_per_token(cfg, vocab);
  s.requested_capacity = 1.0;
  if (cfg.moe.enabled()) {
    const int64_t d = cfg.model.embed_dim, f = cfg.model.ffn_dim;
    for (int dec = 0; dec < 2; ++dec) {
      const int layers = dec ? cfg.model.decoder_layers : cfg.model.encoder_layers;
      for (int i = 0; i < layers; ++i)
        if (cfg.moe.is_moe_layer(dec == 1, i)) {
          ++s.moe_blocks;
          s.expert_parameters += int64_t(cfg.moe.experts) * ffn_params(d, f);
        }
    }
    double rc = 0;
    for (double p : expected_stratum_visits(cfg.moe.strata.empty() ? std::vector<int>{cfg.moe.experts} : cfg.moe.strata))
      rc += p;
    s.requested_capacity = rc;
  }
  return s;
}

std::string ModelSummary::str() const {
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, "%.2fM parameters (%.2fM embedding) | %.1fM forward FLOPs/token",
                        parameters / 1e6, embedding_parameters / 1e6, forward_flops_per_token / 1e6);
  if (moe_blocks > 0 && n > 0 && size_t(n) < sizeof buf)
    std::snprintf(buf + n, sizeof buf - size_t(n), " | %d MoE blocks, %.2fM expert parameters, %.2f strata/token",
                  moe_blocks, expert_parameters / 1e6, requested_capacity);
  return buf;
}

}  // namespace strata::model
