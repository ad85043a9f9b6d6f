// Assembles the translation model the configuration describes, and counts
// what it costs: parameters and forward FLOPs per token (docs/model.md).
#pragma once
#include <memory>
#include <string>

#include "strata/config/options.h"
#include "strata/model/transformer_model.h"

namespace strata::model {

std::unique_ptr<TransformerModel> build_model(const config::Config& cfg, int64_t vocab_size, int64_t padding_idx);

struct ModelSummary {
  int64_t parameters = 0;         // every trainable parameter, shared embedding counted once
  int64_t embedding_parameters = 0;
  double forward_flops_per_token = 0;  // see flops_per_token()
  std::string str() const;             // "60.5M parameters (16.4M embedding) | 167.3M forward FLOPs/token"
};

// Forward FLOPs per target token, Kaplan-style: 2 per multiply-accumulate of
// every weight matrix a token passes through (encoder layers counted per
// source token with source length = target length; the output projection;
// for MoE blocks the k experts a token is sent to and the gate), plus the
// attention score and value products 2 * 2 * context * d per attention layer
// at context = `context_tokens`.
double flops_per_token(const config::Config& cfg, int64_t vocab_size, int64_t context_tokens = 32);
int64_t count_parameters(const config::Config& cfg, int64_t vocab_size);
ModelSummary summarize(const config::Config& cfg, int64_t vocab_size);

}  // namespace strata::model
