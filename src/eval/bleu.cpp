// Port of sacreBLEU 2.x metrics/bleu.py. The floating-point steps follow the
// Python expression order so scores agree to the last bit.
#include "strata/eval/bleu.h"

// Python never fuses a multiply and an add; with -march=native GCC would
// (-ffp-contract=fast is its default), changing scores in the last bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#else
#pragma STDC FP_CONTRACT OFF
#endif

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "strata/core/error.h"
#include "strata/eval/references.h"
#include "strata/eval/unicode.h"

namespace strata::eval {
namespace {

using NgramCounts = std::vector<std::unordered_map<std::string, int64_t>>;  // [order-1][ngram]

// extract_all_word_ngrams: n-grams of orders 1..max over line.split(), keyed
// by the tokens joined with a space (tokens never contain whitespace).
NgramCounts extract_ngrams(const std::string& line, int max_order, int64_t* n_tokens) {
  auto tokens = unicode::split_whitespace_utf8(line);
  *n_tokens = static_cast<int64_t>(tokens.size());
  NgramCounts counts(static_cast<size_t>(max_order));
  std::string key;
  for (size_t i = 0; i < tokens.size(); ++i) {
    key.clear();
    for (int n = 1; n <= max_order && i + n <= tokens.size(); ++n) {
      if (n > 1) key.push_back(' ');
      key.append(tokens[i + n - 1]);
      ++counts[n - 1][key];
    }
  }
  return counts;
}

// _get_closest_ref_len: the reference length nearest to the hypothesis
// length; on a tie the shorter one.
int64_t closest_ref_len(int64_t hyp_len, const std::vector<int64_t>& ref_lens) {
  int64_t best_diff = -1, best_len = -1;
  for (int64_t len : ref_lens) {
    int64_t diff = std::llabs(hyp_len - len);
    if (best_diff == -1 || diff < best_diff) {
      best_diff = diff;
      best_len = len;
    } else if (diff == best_diff && len < best_len) {
      best_len = len;
    }
  }
  return best_len;
}

// my_log: log with log(0) floored to a very negative number.
double my_log(double x) { return x == 0.0 ? -9999999999.0 : std::log(x); }

std::string smooth_signature(SmoothMethod m, std::optional<double> value) {
  std::string s = smooth_method_name(m);
  auto def = default_smooth_value(m);
  if (def) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%.2f]", value ? *value : *def);
    s += buf;
  }
  return s;
}

}  // namespace

SmoothMethod parse_smooth_method(const std::string& name) {
  if (name == "none") return SmoothMethod::None;
  if (name == "floor") return SmoothMethod::Floor;
  if (name == "add-k") return SmoothMethod::AddK;
  if (name == "exp") return SmoothMethod::Exp;
  STRATA_FAIL() << "BLEU: unknown smoothing method '" << name << "' (expected none, floor, add-k, exp)";
  return SmoothMethod::Exp;
}

std::string smooth_method_name(SmoothMethod m) {
  switch (m) {
    case SmoothMethod::None: return "none";
    case SmoothMethod::Floor: return "floor";
    case SmoothMethod::AddK: return "add-k";
    case SmoothMethod::Exp: return "exp";
  }
  return "exp";
}

std::optional<double> default_smooth_value(SmoothMethod m) {
  // Chen & Cherry (2014), as in sacreBLEU's SMOOTH_DEFAULTS.
  if (m == SmoothMethod::Floor) return 0.1;
  if (m == SmoothMethod::AddK) return 1.0;
  return std::nullopt;
}

BleuStats& BleuStats::operator+=(const BleuStats& o) {
  if (correct.empty()) {
    correct.assign(o.correct.size(), 0);
    total.assign(o.total.size(), 0);
  }
  STRATA_CHECK(correct.size() == o.correct.size() && total.size() == o.total.size())
      << "BLEU: cannot add statistics of n-gram order " << o.correct.size() << " to order " << correct.size();
  sys_len += o.sys_len;
  ref_len += o.ref_len;
  for (size_t n = 0; n < correct.size(); ++n) {
    correct[n] += o.correct[n];
    total[n] += o.total[n];
  }
  return *this;
}

BleuScore compute_bleu(const BleuStats& stats, SmoothMethod method, std::optional<double> smooth_value,
                       bool effective_order, int max_ngram_order) {
  STRATA_CHECK(max_ngram_order >= 1) << "BLEU: max n-gram order " << max_ngram_order << " must be >= 1";
  const auto order = static_cast<size_t>(max_ngram_order);
  STRATA_CHECK(stats.correct.size() == order && stats.total.size() == order)
      << "BLEU: statistics have " << stats.correct.size() << " orders, expected " << max_ngram_order;
  if (!smooth_value) smooth_value = default_smooth_value(method);

  BleuScore out;
  out.name = "BLEU";
  out.counts = stats.correct;
  out.totals = stats.total;
  out.sys_len = stats.sys_len;
  out.ref_len = stats.ref_len;
  out.ratio = stats.ref_len ? static_cast<double>(stats.sys_len) / static_cast<double>(stats.ref_len) : 0.0;
  out.precisions.assign(order, 0.0);

  if (stats.sys_len < stats.ref_len)
    out.bp = stats.sys_len > 0
                 ? std::exp(1.0 - static_cast<double>(stats.ref_len) / static_cast<double>(stats.sys_len))
                 : 0.0;
  else
    out.bp = 1.0;

  bool any_correct = false;
  for (auto c : stats.correct) any_correct |= c != 0;
  if (any_correct) {  // no matches at all: 0 without smoothing (sacreBLEU #141)
    double smooth_mteval = 1.0;
    size_t eff_order = order;
    for (size_t n = 1; n <= order; ++n) {
      double correct = static_cast<double>(stats.correct[n - 1]);
      double total = static_cast<double>(stats.total[n - 1]);
      if (method == SmoothMethod::AddK && n > 1) {
        correct += *smooth_value;
        total += *smooth_value;
      }
      if (total == 0) break;
      if (effective_order) eff_order = n;
      if (correct == 0) {
        if (method == SmoothMethod::Exp) {
          smooth_mteval *= 2;
          out.precisions[n - 1] = 100.0 / (smooth_mteval * total);
        } else if (method == SmoothMethod::Floor) {
          out.precisions[n - 1] = 100.0 * *smooth_value / total;
        }
      } else {
        out.precisions[n - 1] = 100.0 * correct / total;
      }
    }
    double log_sum = 0.0;
    for (size_t n = 0; n < eff_order; ++n) log_sum += my_log(out.precisions[n]);
    out.score = out.bp * std::exp(log_sum / static_cast<double>(eff_order));
  }

  std::string prec;
  for (size_t n = 0; n < order; ++n) prec += (n ? "/" : "") + format_fixed(out.precisions[n], 1);
  out.verbose = prec + " (BP = " + format_fixed(out.bp, 3) + " ratio = " + format_fixed(out.ratio, 3) +
                " hyp_len = " + std::to_string(out.sys_len) + " ref_len = " + std::to_string(out.ref_len) + ")";
  return out;
}

Bleu::Bleu(BleuOptions opts) : opts_(std::move(opts)) {
  STRATA_CHECK(opts_.max_ngram_order >= 1) << "BLEU: max n-gram order " << opts_.max_ngram_order
                                           << " must be >= 1";
  tok_ = opts_.tokenizer ? opts_.tokenizer : make_tokenizer(opts_.tokenize, opts_.spm_model);
}

std::string Bleu::preprocess(std::string_view line) const {
  if (opts_.lowercase) {
    std::string low = unicode::lower_utf8(line);
    return (*tok_)(unicode::rstrip_utf8(low));
  }
  STRATA_CHECK(unicode::is_valid_utf8(line)) << "BLEU: invalid UTF-8 input";
  return (*tok_)(unicode::rstrip_utf8(line));
}

Signature Bleu::signature(const std::string& nrefs) const {
  Signature sig;
  sig.add("nrefs", "#", nrefs);
  sig.add("case", "c", opts_.lowercase ? "lc" : "mixed");
  sig.add("eff", "e", opts_.effective_order ? "yes" : "no");
  sig.add("tok", "tok", tok_->signature());
  sig.add("smooth", "s", smooth_signature(opts_.smooth_method, opts_.smooth_value));
  return sig;
}

BleuStats Bleu::stats_for(const std::string& hyp, const std::vector<const std::string*>& refs) const {
  const int max_order = opts_.max_ngram_order;
  // _extract_reference_info: n-gram counts merged by max over references.
  NgramCounts ref_ngrams;
  std::vector<int64_t> ref_lens;
  for (const std::string* ref : refs) {
    int64_t len = 0;
    NgramCounts one = extract_ngrams(preprocess(*ref), max_order, &len);
    ref_lens.push_back(len);
    if (ref_ngrams.empty()) {
      ref_ngrams = std::move(one);
      continue;
    }
    for (int n = 0; n < max_order; ++n)
      for (const auto& [ng, count] : one[n]) {
        int64_t& slot = ref_ngrams[n][ng];
        slot = std::max(slot, count);
      }
  }
  BleuStats st;
  NgramCounts hyp_ngrams = extract_ngrams(preprocess(hyp), max_order, &st.sys_len);
  st.ref_len = closest_ref_len(st.sys_len, ref_lens);
  st.correct.assign(static_cast<size_t>(max_order), 0);
  st.total.assign(static_cast<size_t>(max_order), 0);
  for (int n = 0; n < max_order; ++n)
    for (const auto& [ng, count] : hyp_ngrams[n]) {
      st.total[n] += count;
      auto it = ref_ngrams[n].find(ng);
      if (it != ref_ngrams[n].end()) st.correct[n] += std::min(count, it->second);
    }
  return st;
}

std::vector<BleuStats> Bleu::segment_stats(const std::vector<std::string>& hyps,
                                           const std::vector<std::vector<std::string>>& refs,
                                           std::string* nrefs) const {
  SegmentReferences seg = gather_references(hyps, refs, "BLEU");
  if (nrefs) *nrefs = seg.nrefs;
  std::vector<BleuStats> out(hyps.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    try {
      out[i] = stats_for(hyps[i], seg.refs[i]);
    } catch (const Error& e) {
      STRATA_FAIL() << e.what() << " (segment " << i + 1 << ")";
    }
  }
  return out;
}

BleuScore Bleu::score_from_stats(const BleuStats& total, const std::string& nrefs) const {
  BleuScore s = compute_bleu(total, opts_.smooth_method, opts_.smooth_value, opts_.effective_order,
                             opts_.max_ngram_order);
  s.signature = signature(nrefs);
  return s;
}

BleuScore Bleu::corpus_score(const std::vector<std::string>& hyps,
                             const std::vector<std::vector<std::string>>& refs) const {
  std::string nrefs;
  auto per_segment = segment_stats(hyps, refs, &nrefs);
  BleuStats total;
  for (const auto& s : per_segment) total += s;
  return score_from_stats(total, nrefs);
}

BleuScore Bleu::sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const {
  std::vector<std::vector<std::string>> streams;
  for (const auto& r : refs) streams.push_back({r});
  return corpus_score({hyp}, streams);
}

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& opts) {
  return Bleu(opts).corpus_score(hyps, refs);
}

}  // namespace strata::eval
