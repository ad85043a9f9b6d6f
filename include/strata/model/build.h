// Assembles the translation model the configuration describes, and counts
// what it costs: parameters and forward FLOPs per token (docs/moe.md has the
// counting rules and the comparison with the SMoE paper's tables).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/dist/communicator.h"
#include "strata/model/transformer_model.h"

namespace strata::moe {
class MoEBlock;
}

namespace strata::model {

// The FFN slots: dense everywhere, or an MoE block (moe::MoEBlock) in every
// layer cfg.moe.is_moe_layer() selects. MoE blocks exchange expert buffers
// through `comm` (which also decides the local experts); null = one process
// (a LocalCommunicator owned by this module). comm must outlive the model.
FfnFactory ffn_factory(const config::Config& cfg, dist::Communicator* comm = nullptr);
std::unique_ptr<TransformerModel> build_model(const config::Config& cfg, int64_t vocab_size, int64_t padding_idx,
                                              dist::Communicator* comm = nullptr);

// The MoE blocks of a model, encoder first, in layer order.
std::vector<moe::MoEBlock*> moe_blocks(TransformerModel& model);
// Evaluation capacity of every MoE block (decoding: 1.0 = no dropping);
// nullopt restores the configured eval_capacity_token_fraction.
void set_moe_eval_capacity(TransformerModel& model, std::optional<double> fraction);

struct ModelSummary {
  int64_t parameters = 0;         // every trainable parameter, shared embedding counted once
  int64_t embedding_parameters = 0;
  int64_t expert_parameters = 0;  // all experts of all MoE blocks
  int moe_blocks = 0;
  double forward_flops_per_token = 0;  // see flops_per_token()
  double requested_capacity = 0;       // strata passed per token under uniform routing (1 for plain MoE)
  // "60.52M parameters (16.38M embedding) | 166.0M forward FLOPs/token", plus
  // " | 6 MoE blocks, 88.18M expert parameters, 2.08 strata/token" for MoE models
  std::string str() const;
};

// Forward FLOPs per target token, Kaplan-style: 2 per multiply-accumulate of
// every weight matrix a token passes through (encoder layers counted per
// source token with source length = target length; the output projection),
// plus the attention score and value products 2 * 2 * context * d per
// attention layer at context = `context_tokens`. An MoE block costs, per
// stratum s it is visited at (probability p_s under uniform routing, see
// expected_stratum_visits), its gate (d * V_s MACs) and k experts (k = 2, or
// 1 for top-1); CMR adds the shared FFN and its gate.
// The default context reproduces the SMoE paper's FLOPs columns: with it the
// M4 and M15 dense models come out at 166.0M and 508.1M (paper: 167M, 506M)
// and every MoE/SMoE row of Tables 1-2 within 1% (docs/moe.md).
constexpr int64_t kPaperContextTokens = 1224;
double flops_per_token(const config::Config& cfg, int64_t vocab_size, int64_t context_tokens = kPaperContextTokens);
int64_t count_parameters(const config::Config& cfg, int64_t vocab_size);
ModelSummary summarize(const config::Config& cfg, int64_t vocab_size);

// p_s for s = 0..L-1: the probability that a token is gated at stratum s when
// every gate picks its top-1 expert uniformly among the visible ones (a token
// at stratum i moves to j + 1 with probability n_j / V_i, j >= i). Their sum
// is the expected requested capacity; the SMoE paper's FLOPs columns follow it.
std::vector<double> expected_stratum_visits(const std::vector<int>& strata);

}  // namespace strata::model
