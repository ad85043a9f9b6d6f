// Routing statistics per MoE block, accumulated over forwards (normally the
// validation set) and written as one metrics.jsonl record: expert load (top-1
// share per expert), capacity overflow, gate entropy and, for SMoE, the
// requested capacity (mean number of strata a token passes), overall and per
// language. PAD tokens are left out; data_tools/plot_routing plots them.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace strata::moe {

struct LangRouting {
  int64_t tokens = 0;
  int64_t visits = 0;         // strata passed, summed over tokens
  std::vector<int64_t> top1;  // first choices per global expert
};

struct BlockRoutingStats {
  int experts = 0;
  std::vector<int> strata;  // experts per stratum
  std::vector<int64_t> top1, top2;  // first / second choices per global expert (before capacity), all passes
  int64_t first_choices = 0, first_dropped = 0, second_choices = 0, second_dropped = 0;
  double entropy_sum = 0;  // gate entropy (nats) summed over gated rows
  int64_t gated_rows = 0;
  int64_t tokens = 0, visits = 0;   // tokens through the block and the strata they passed
  std::vector<int64_t> visit_hist;  // [L]: tokens that passed 1, 2, ..., L strata
  std::map<int32_t, LangRouting> by_lang;

  double requested_capacity() const { return tokens ? double(visits) / double(tokens) : 0.0; }
  double entropy() const { return gated_rows ? entropy_sum / double(gated_rows) : 0.0; }
  // Dropped choices in percent of all choices (first and second together).
  double overflow_pct() const;
  // Fraction of first choices per expert (sums to 1 over the experts).
  std::vector<double> load() const;
};

struct RoutingStats {
  std::vector<std::pair<std::string, BlockRoutingStats>> blocks;  // in order of first use
  // The entry for a block, created with the given strata (experts per stratum) on first use.
  BlockRoutingStats& block(const std::string& name, const std::vector<int>& strata);
  const BlockRoutingStats* find(const std::string& name) const;
  void merge(const RoutingStats& other);
  void clear() { blocks.clear(); }
  bool empty() const { return blocks.empty(); }
};

// {"moe_routing": [{"block": "encoder.layers.1", "experts": 8, "strata": [2, 2, 2, 2], "tokens": ...,
//   "load": [...], "load_top2": [...], "overflow_pct": ..., "overflow1_pct": ..., "overflow2_pct": ...,
//   "entropy": ..., "requested_capacity": ..., "visit_hist": [...],
//   "by_lang": {"de": {"tokens": ..., "requested_capacity": ..., "load": [...]}, ...}}, ...]}
// Language ids index lang_names when given (else they are written as numbers).
nlohmann::json routing_stats_json(const RoutingStats& stats, const std::vector<std::string>& lang_names = {});

}  // namespace strata::moe
