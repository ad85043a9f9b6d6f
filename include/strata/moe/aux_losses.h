// What MoE blocks hand back besides their output: per-block gate losses
// (balance, z-loss, CMR gate sums) and, when asked, routing statistics.
// nn::ForwardContext carries a pointer to one AuxLosses (forward-declared in
// nn/module.h); the trainer makes a fresh one per forward and turns it into
// the loss term with moe::aux_loss_total.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "strata/config/options.h"
#include "strata/core/tensor.h"
#include "strata/moe/routing_stats.h"

namespace strata::nn {

struct AuxLosses {
  struct Block {
    std::string name;     // "encoder.layers.1"
    Tensor balance;       // 0-d: the block's balance loss, averaged over its passes
    Tensor z_loss;        // 0-d, averaged over passes; undefined unless z_loss_weight > 0
    Tensor cmr_gate_sum;  // 0-d: sum of the CMR gate values c over the block's tokens (CMR only)
    int64_t cmr_tokens = 0;
    int passes = 0;
    // With record_paths: per token (row b*T + t), the (stratum, global top-1
    // expert) of every pass it took part in, in order.
    std::vector<std::vector<std::pair<int32_t, int32_t>>> paths;
  };
  std::vector<Block> blocks;  // one per MoE block forward, in forward order

  // Routing statistics (moe/routing_stats.h) are accumulated while this is set.
  bool collect_stats = false;
  // Keep every token's path through the strata in Block::paths (tests, analysis).
  bool record_paths = false;
  // Language id of each sentence of the batch (row b of [B, T]); empty or a
  // size other than B means "unknown" (no per-language breakdown).
  std::vector<int32_t> sentence_lang;
  moe::RoutingStats stats;

  // Evaluation capacity for this forward instead of each block's configured
  // eval_capacity_token_fraction (e.g. 1.0 = no dropping when translating).
  std::optional<double> eval_capacity_token_fraction;

  void clear_losses() { blocks.clear(); }
};

}  // namespace strata::nn

namespace strata::moe {

// The loss term the MoE blocks add to the label-smoothed CE sum (spec 1.5):
//   w_aux * ntokens * mean over blocks of balance
// + w_cmr * ntokens * |sum c / sum tokens - cmr_target|   (CMR blocks)
// + w_z   * ntokens * mean over blocks of z_loss          (z_loss_weight > 0)
// as a differentiable 0-d tensor (a constant 0 when there are no MoE blocks).
Tensor aux_loss_total(const nn::AuxLosses& aux, int64_t ntokens, const config::MoEOptions& o);

// The unweighted parts, for logging.
struct AuxLossParts {
  double gate_loss = 0;  // mean balance loss over blocks
  double cmr_loss = 0;   // |mean c - target| (0 without CMR blocks)
  double z_loss = 0;     // mean z-loss over blocks (0 unless computed)
  int blocks = 0;
};
AuxLossParts aux_loss_parts(const nn::AuxLosses& aux, const config::MoEOptions& o);

}  // namespace strata::moe
