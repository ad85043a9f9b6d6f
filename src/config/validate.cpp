// Rules that involve more than one option, checked after every value has
// passed its own type/range check; plus the normalisation that runs first.
#include <numeric>
#include <set>
#include <sstream>

#include "strata/config/config.h"
#include "strata/core/error.h"
#include "validate.h"

namespace strata::config {
namespace {

// Throws "ORIGINS: message" where ORIGINS lists, without repeats, where the
// non-default values among `keys` came from ("x.yaml", "x.yaml, --set").
class Rules {
 public:
  explicit Rules(const std::function<std::string(const std::string&)>& origin) : origin_(origin) {}

  [[noreturn]] void fail(std::initializer_list<const char*> keys, const std::string& msg) const {
    std::vector<std::string> seen;
    for (const char* k : keys) {
      std::string o = origin_ ? origin_(k) : "default";
      if (o == "default") continue;
      bool dup = false;
      for (const auto& s : seen) dup = dup || s == o;
      if (!dup) seen.push_back(o);
    }
    std::string prefix;
    for (size_t i = 0; i < seen.size(); ++i) prefix += (i ? ", " : "") + seen[i];
    throw Error((prefix.empty() ? "config" : prefix) + ": " + msg);
  }

 private:
  std::function<std::string(const std::string&)> origin_;
};

std::string join(const std::vector<int>& v) { return format_value(v); }

void check_model(const Config& c, const Rules& r) {
  const auto& m = c.model;
  if (m.embed_dim % m.attention_heads != 0)
    r.fail({"embed_dim", "attention_heads"}, "embed_dim " + std::to_string(m.embed_dim) +
                                                 " is not divisible by attention_heads " +
                                                 std::to_string(m.attention_heads));
}

void check_moe(const Config& c, const Rules& r) {
  const auto& m = c.moe;
  const std::string type = to_string(m.moe_type);
  if (m.experts == 0) {
    if (m.moe_type != MoEType::Base)
      r.fail({"moe_type", "experts"}, "moe_type '" + type + "' needs experts > 0 (experts is 0: a dense model)");
    if (!m.strata.empty())
      r.fail({"strata", "experts"}, "strata " + join(m.strata) + " given for a dense model (experts is 0)");
    return;
  }
  if (!m.strata.empty()) {
    int sum = std::accumulate(m.strata.begin(), m.strata.end(), 0);
    if (sum != m.experts)
      r.fail({"strata", "experts"}, "strata " + join(m.strata) + " sum to " + std::to_string(sum) +
                                        ", but experts is " + std::to_string(m.experts));
  }
  // The reference's CMR wrapper exists only on the plain MoE path (spec 1.5).
  if (m.moe_type == MoEType::Cmr && m.num_strata() > 1)
    r.fail({"moe_type", "strata"}, "cmr cannot be combined with more than one stratum (strata " + join(m.strata) + ")");
  if (m.moe_type == MoEType::Eom && m.eom_rate <= 0.0)
    r.fail({"moe_type", "eom_rate"}, "moe_type 'eom' needs eom_rate > 0");
  bool any = false;
  for (int i = 0; i < c.model.encoder_layers; ++i) any = any || m.is_moe_layer(false, i);
  for (int i = 0; i < c.model.decoder_layers; ++i) any = any || m.is_moe_layer(true, i);
  if (!any)
    r.fail({"experts", "moe_freq", "encoder_moe_freq", "decoder_moe_freq"},
           "experts is " + std::to_string(m.experts) + " but no layer is an MoE block (moe_freq " +
               std::to_string(m.effective_encoder_freq()) + "/" + std::to_string(m.effective_decoder_freq()) +
               " with " + std::to_string(c.model.encoder_layers) + "+" + std::to_string(c.model.decoder_layers) +
               " layers)");
}

void check_data(const Config& c, const Rules& r) {
  const auto& d = c.data;
  if (d.max_source_len > c.model.max_source_positions)
    r.fail({"max_source_len", "max_source_positions"},
           "max_source_len " + std::to_string(d.max_source_len) + " exceeds max_source_positions " +
               std::to_string(c.model.max_source_positions));
  if (d.max_target_len > c.model.max_target_positions)
    r.fail({"max_target_len", "max_target_positions"},
           "max_target_len " + std::to_string(d.max_target_len) + " exceeds max_target_positions " +
               std::to_string(c.model.max_target_positions));
  std::set<std::string> langs;
  for (const auto& l : d.langs) {
    if (l.empty()) r.fail({"langs"}, "langs has an empty entry");
    if (!langs.insert(l).second) r.fail({"langs"}, "langs lists '" + l + "' twice");
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  try {
    pairs = parse_lang_pairs(d);
  } catch (const Error& e) {
    r.fail({"lang_pairs", "langs"}, e.what());
  }
  std::set<std::pair<std::string, std::string>> unique;
  for (size_t i = 0; i < pairs.size(); ++i)
    if (!unique.insert(pairs[i]).second) r.fail({"lang_pairs"}, "lang_pairs lists '" + d.lang_pairs[i] + "' twice");
}

void check_train(const Config& c, const Rules& r) {
  const auto& t = c.train;
  if (t.device == DeviceChoice::Cpu && t.precision != Precision::Fp32)
    r.fail({"precision", "device"},
           std::string("precision '") + to_string(t.precision) + "' needs device cuda (the CPU trains in fp32)");
  if (t.maximize_best_metric() && t.valid_bleu_sentences == 0)
    r.fail({"best_checkpoint_metric", "valid_bleu_sentences"},
           std::string("best_checkpoint_metric '") + to_string(t.best_checkpoint_metric) +
               "' needs valid_bleu_sentences != 0 (it is computed on decoded dev sentences)");
  // save_interval_updates and validate_interval_updates are independent: the
  // trainer picks checkpoint_best right after each validation (and always
  // saves then), so frequent preemption-safe saves need no validation.
}

void check_decode(const Config& c, const Rules& r) {
  const auto& d = c.decode;
  if (d.greedy && d.nbest > 1)
    r.fail({"greedy", "nbest"}, "greedy search yields one hypothesis, but nbest is " + std::to_string(d.nbest));
  if (!d.greedy && d.nbest > d.beam)
    r.fail({"nbest", "beam"}, "nbest " + std::to_string(d.nbest) + " exceeds beam " + std::to_string(d.beam));
}

}  // namespace

void normalize_config(Config& c) {
  // An MoE model without an explicit split is vanilla MoE: one stratum.
  if (c.moe.experts > 0 && c.moe.strata.empty()) c.moe.strata = {c.moe.experts};
}

void validate_config(const Config& c, const std::function<std::string(const std::string&)>& origin) {
  Rules r(origin);
  check_model(c, r);
  check_moe(c, r);
  check_data(c, r);
  check_train(c, r);
  check_decode(c, r);
}

void validate_config(const Config& c) {
  // A Config built in code skipped the per-key checks that loading applies;
  // run them by reading every value back through its option.
  Config copy = c;
  OptionRegistry reg = registry_for(copy);
  for (const auto& o : reg.options()) {
    RawValue v = o->is_list() ? RawValue::list(o->items()) : RawValue::of(o->str());
    if (!o->assign(v))
      throw Error("config: key '" + o->key() + "' expects " + o->expects() + ", got '" + v.text() + "'");
  }
  validate_config(c, nullptr);
}

}  // namespace strata::config
