#include "strata/moe/routing_stats.h"

#include <nlohmann/json.hpp>

#include "strata/core/error.h"

namespace strata::moe {

double BlockRoutingStats::overflow_pct() const {
  const int64_t all = first_choices + second_choices;
  return all ? 100.0 * double(first_dropped + second_dropped) / double(all) : 0.0;
}

namespace {
std::vector<double> shares(const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<double> out(counts.size(), 0.0);
  if (total > 0)
    for (size_t e = 0; e < counts.size(); ++e) out[e] = double(counts[e]) / double(total);
  return out;
}
void add_into(std::vector<int64_t>& dst, const std::vector<int64_t>& src) {
  if (dst.size() < src.size()) dst.resize(src.size(), 0);
  for (size_t i = 0; i < src.size(); ++i) dst[i] += src[i];
}
}  // namespace

std::vector<double> BlockRoutingStats::load() const { return shares(top1); }

BlockRoutingStats& RoutingStats::block(const std::string& name, const std::vector<int>& strata) {
  for (auto& [n, b] : blocks)
    if (n == name) {
      STRATA_CHECK(b.strata == strata) << "routing stats: block '" << name << "' seen with " << b.strata.size()
                                       << " strata of " << b.experts << " experts and now with different strata";
      return b;
    }
  BlockRoutingStats b;
  b.experts = 0;
  for (int n : strata) b.experts += n;
  b.strata = strata;
  b.top1.assign(size_t(b.experts), 0);
  b.top2.assign(size_t(b.experts), 0);
  b.visit_hist.assign(strata.size(), 0);
  blocks.emplace_back(name, std::move(b));
  return blocks.back().second;
}

const BlockRoutingStats* RoutingStats::find(const std::string& name) const {
  for (auto& [n, b] : blocks)
    if (n == name) return &b;
  return nullptr;
}

void RoutingStats::merge(const RoutingStats& other) {
  for (const auto& [name, o] : other.blocks) {
    BlockRoutingStats& b = block(name, o.strata);
    add_into(b.top1, o.top1);
    add_into(b.top2, o.top2);
    b.first_choices += o.first_choices;
    b.first_dropped += o.first_dropped;
    b.second_choices += o.second_choices;
    b.second_dropped += o.second_dropped;
    b.entropy_sum += o.entropy_sum;
    b.gated_rows += o.gated_rows;
    b.tokens += o.tokens;
    b.visits += o.visits;
    add_into(b.visit_hist, o.visit_hist);
    for (const auto& [lang, l] : o.by_lang) {
      LangRouting& dst = b.by_lang[lang];
      dst.tokens += l.tokens;
      dst.visits += l.visits;
      add_into(dst.top1, l.top1);
    }
  }
}

nlohmann::json routing_stats_json(const RoutingStats& stats, const std::vector<std::string>& lang_names) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, b] : stats.blocks) {
    nlohmann::json j;
    j["block"] = name;
    j["experts"] = b.experts;
    j["strata"] = b.strata;
    j["tokens"] = b.tokens;
    j["load"] = b.load();
    j["load_top2"] = shares(b.top2);
    j["overflow_pct"] = b.overflow_pct();
    j["overflow1_pct"] = b.first_choices ? 100.0 * double(b.first_dropped) / double(b.first_choices) : 0.0;
    j["overflow2_pct"] = b.second_choices ? 100.0 * double(b.second_dropped) / double(b.second_choices) : 0.0;
    j["entropy"] = b.entropy();
    j["requested_capacity"] = b.requested_capacity();
    j["visit_hist"] = b.visit_hist;
    nlohmann::json langs = nlohmann::json::object();
    for (const auto& [lang, l] : b.by_lang) {
      const std::string key = lang >= 0 && size_t(lang) < lang_names.size() ? lang_names[size_t(lang)]
                                                                             : std::to_string(lang);
      langs[key] = {{"tokens", l.tokens},
                    {"requested_capacity", l.tokens ? double(l.visits) / double(l.tokens) : 0.0},
                    {"load", shares(l.top1)}};
    }
    j["by_lang"] = langs;
    list.push_back(std::move(j));
  }
  return nlohmann::json{{"moe_routing", list}};
}

}  // namespace strata::moe
