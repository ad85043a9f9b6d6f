// The MoE FFN block of a transformer layer: plain token-choice MoE (GShard
// top-2 / Switch top-1), Stratified MoE (docs/smoe_spec.md section 1), EOM
// and CMR (section 2), behind nn::FeedForwardBlock. docs/moe.md explains the
// design; the semantics follow the reference code, the paper's residual form
// is an option.
//
// Flow of one block (x = residual stream u entering the FFN sub-block):
//   state := 0 for every token; h := u
//   while (s := global MIN of the states) < L:            (Communicator)
//     A := tokens at stratum s (only they enter the pass)
//     z := final_layer_norm(h) at s = 0, LN_hmoe[s-1](h) after
//     r := u at s = 0; z (code) or h (paper) after
//     h := r + MoE_s(z) on A; state := stratum(top-1 expert) + 1 on A
//   out := LN_hmoe[L-1](h)   (plain MoE without hmoe LNs: out := h)
// CMR (one stratum, no hmoe LNs): out := u + (1-c) FFN_shared(z) + c MoE(z).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/dist/communicator.h"
#include "strata/moe/aux_losses.h"
#include "strata/moe/experts.h"
#include "strata/moe/gate.h"
#include "strata/nn/layers.h"
#include "strata/nn/transformer.h"

namespace strata::moe {

// Everything that fixes one block's behaviour (built from the config by block_spec).
struct BlockSpec {
  std::string name;  // "encoder.layers.1": statistics key
  uint64_t key = 0;  // distinguishes blocks in the evaluation Gumbel stream
  int64_t dim = 0, ffn_dim = 0;
  std::vector<int> strata;  // experts per stratum (global ids in stratum order)
  GateOptions gate;
  double dropout = 0, activation_dropout = 0;  // inside every expert (and the CMR shared FFN)
  double eom_rate = 0;                         // expert output masking; 0 = off
  bool hmoe_layernorm = true;                  // per-stratum LNs and the normalised block output
  config::SmoeResidual residual = config::SmoeResidual::Code;
  bool cmr = false;
  double cmr_gate_dropout = 0;
  double layernorm_eps = 1e-5;

  int experts() const;
  int num_strata() const { return int(strata.size()); }
  int stratum_offset(int s) const;
  int stratum_of(int expert) const;
  // hmoe LNs exist: requested and not CMR (CMR runs the plain MoELayer path).
  bool has_hmoe_layernorms() const { return hmoe_layernorm && !cmr; }
};

// The block of layer `layer` (0-based) of the encoder or decoder.
BlockSpec block_spec(const config::Config& cfg, bool decoder, int layer);

// Which experts this process computes. One process: all of them.
struct ExpertPlacement {
  int world = 1, rank = 0;
  int64_t first_local = 0, num_local = 0;  // global ids [first_local, first_local + num_local)
  static ExpertPlacement of(int64_t experts, const dist::Communicator& comm);
};

// The tensors a block computes with; MoEBlock fills it from its parameters,
// tests from f64 leaves (gradient checks).
struct BlockWeights {
  Tensor ln_weight, ln_bias;  // final_layer_norm: the LN before stratum 0
  std::vector<Tensor> gates;  // per stratum s: [E - offset_s, dim], no bias
  // Local experts [first, first + count) (local index = global - first_local), stacked.
  std::function<ExpertWeights(int64_t first, int64_t count)> experts;
  std::vector<Tensor> hmoe_ln_weight, hmoe_ln_bias;  // per stratum, when has_hmoe_layernorms()
  Tensor cmr_weight, cmr_bias;                       // [1, dim], [1]
  Tensor shared_fc1_weight, shared_fc1_bias, shared_fc2_weight, shared_fc2_bias;  // CMR's dense FFN
};

// x [B, T, dim] (residual stream), pad [B, T] (nonzero = PAD) or undefined.
// Adds the block's losses (and statistics) to ctx.aux when it is set.
Tensor moe_block_forward(const Tensor& x, const Tensor& pad, const BlockSpec& spec, const BlockWeights& w,
                         const nn::ForwardContext& ctx, dist::Communicator& comm, const ExpertPlacement& place,
                         std::optional<double> eval_capacity_override = std::nullopt);

// The Module: parameter names (inside the layer's namespace, fairseq-like,
// experts under their global id):
//   final_layer_norm.{weight,bias}
//   moe_layer.gate.<s>.wg.weight                    [E - offset_s, dim]
//   moe_layer.experts.<g>.fc{1,2}.{weight,bias}     g = global expert id
//   hmoe_layernorms.<s>.{weight,bias}               (hmoe_layernorm, not CMR)
//   cmr_layer.gate.{weight,bias}, fc{1,2}.{weight,bias}   (CMR: its gate and shared FFN)
class MoEBlock : public nn::FeedForwardBlock {
 public:
  // comm must outlive the block; it defines which experts are local.
  MoEBlock(BlockSpec spec, dist::Communicator& comm);
  Tensor forward(const Tensor& x, const Tensor& pad, const nn::ForwardContext& ctx) override;
  bool is_moe() const override { return true; }

  const BlockSpec& spec() const { return spec_; }
  const ExpertPlacement& placement() const { return place_; }
  // Evaluation capacity fraction (e.g. 1.0 when translating); unset = spec's.
  void set_eval_capacity_fraction(std::optional<double> f) { eval_capacity_ = f; }
  BlockWeights weights() const;

 private:
  BlockSpec spec_;
  dist::Communicator& comm_;
  ExpertPlacement place_;
  std::optional<double> eval_capacity_;
  Tensor ln_weight_, ln_bias_;
  std::vector<std::unique_ptr<nn::Linear>> gates_;
  std::unique_ptr<ExpertBank> experts_;
  std::vector<Tensor> hmoe_weight_, hmoe_bias_;
  std::unique_ptr<nn::Linear> cmr_gate_, fc1_, fc2_;
};

}  // namespace strata::moe
