// Port of sacreBLEU 2.x metrics/chrf.py and the n-gram helpers it uses.
#include "strata/eval/chrf.h"

// Python never fuses a multiply and an add; with -march=native GCC would
// (-ffp-contract=fast is its default), changing scores in the last bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#else
#pragma STDC FP_CONTRACT OFF
#endif

#include <algorithm>
#include <unordered_map>

#include "strata/core/error.h"
#include "strata/eval/references.h"
#include "strata/eval/unicode.h"

namespace strata::eval {
namespace {

using CharCounts = std::unordered_map<std::u32string, int64_t>;
using WordCounts = std::unordered_map<std::string, int64_t>;

struct SegmentNgrams {
  std::vector<CharCounts> chars;  // orders 1..char_order
  std::vector<WordCounts> words;  // orders 1..word_order
};

// extract_all_char_ngrams: whitespace is dropped unless kept explicitly.
std::vector<CharCounts> char_ngrams(const std::u32string& text, int max_order, bool whitespace) {
  std::u32string line = whitespace ? text : unicode::remove_whitespace(text);
  std::vector<CharCounts> out(static_cast<size_t>(max_order));
  for (int n = 1; n <= max_order; ++n)
    for (size_t i = 0; i + n <= line.size(); ++i) ++out[n - 1][line.substr(i, n)];
  return out;
}

// extract_word_ngrams: n-grams keyed by their tokens joined with a space.
WordCounts word_ngrams(const std::vector<std::string>& tokens, int n) {
  WordCounts out;
  for (size_t i = 0; i + n <= tokens.size(); ++i) {
    std::string key = tokens[i];
    for (int k = 1; k < n; ++k) key += " " + tokens[i + k];
    ++out[key];
  }
  return out;
}

// _get_match_statistics: [hyp count, ref count, matches]; hypothesis n-grams
// are not counted when the reference has none of that order.
template <class Counts>
void match_stats(const Counts& hyp, const Counts& ref, std::vector<int64_t>& out) {
  int64_t hyp_count = 0, ref_count = 0, match = 0;
  for (const auto& [ng, c] : hyp) {
    hyp_count += c;
    auto it = ref.find(ng);
    if (it != ref.end()) match += std::min(c, it->second);
  }
  for (const auto& kv : ref) ref_count += kv.second;
  out.push_back(ref.empty() ? 0 : hyp_count);
  out.push_back(ref_count);
  out.push_back(match);
}

}  // namespace

std::vector<std::string> chrf_remove_punctuation(const std::string& sentence) {
  // Python's string.punctuation.
  static const std::string kPuncts = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  auto is_punct = [](char c) { return kPuncts.find(c) != std::string::npos; };
  std::vector<std::string> out;
  std::u32string text = unicode::decode_or_throw(sentence, "chrF");
  for (auto w32 : unicode::split_whitespace(text)) {
    std::string w = unicode::encode_utf8(w32);
    if (w32.size() == 1) {
      out.push_back(w);
    } else if (is_punct(w.back())) {  // '(hi)' becomes '(hi' and ')' as in sacreBLEU (#124)
      out.push_back(w.substr(0, w.size() - 1));
      out.push_back(w.substr(w.size() - 1));
    } else if (is_punct(w.front())) {
      out.push_back(w.substr(0, 1));
      out.push_back(w.substr(1));
    } else {
      out.push_back(w);
    }
  }
  return out;
}

Chrf::Chrf(ChrfOptions opts) : opts_(opts) {
  STRATA_CHECK(opts_.char_order >= 0 && opts_.word_order >= 0 && opts_.char_order + opts_.word_order > 0)
      << "chrF: character order " << opts_.char_order << " and word order " << opts_.word_order
      << " must be >= 0 and not both 0";
  STRATA_CHECK(opts_.beta >= 0) << "chrF: beta " << opts_.beta << " must be >= 0";
}

double Chrf::f_score(const std::vector<int64_t>& stats) const {
  const int order = opts_.char_order + opts_.word_order;
  STRATA_CHECK(stats.size() == static_cast<size_t>(3 * order))
      << "chrF: statistics have " << stats.size() << " values, expected " << 3 * order;
  const double eps = 1e-16;
  const double factor = static_cast<double>(opts_.beta) * opts_.beta;
  double score = 0.0, avg_prec = 0.0, avg_rec = 0.0;
  int effective_order = 0;
  for (int i = 0; i < order; ++i) {
    int64_t n_hyp = stats[3 * i], n_ref = stats[3 * i + 1], n_match = stats[3 * i + 2];
    double prec = n_hyp > 0 ? static_cast<double>(n_match) / static_cast<double>(n_hyp) : eps;
    double rec = n_ref > 0 ? static_cast<double>(n_match) / static_cast<double>(n_ref) : eps;
    double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (n_hyp > 0 && n_ref > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective_order;
    }
  }
  if (opts_.eps_smoothing) return 100 * score / order;
  if (effective_order == 0) {
    avg_prec = avg_rec = 0.0;
  } else {
    avg_prec /= effective_order;
    avg_rec /= effective_order;
  }
  if (avg_prec + avg_rec == 0) return 0.0;
  score = (1 + factor) * avg_prec * avg_rec;
  score /= (factor * avg_prec) + avg_rec;
  return 100 * score;
}

Signature Chrf::signature(const std::string& nrefs) const {
  Signature sig;
  sig.add("nrefs", "#", nrefs);
  sig.add("case", "c", opts_.lowercase ? "lc" : "mixed");
  sig.add("eff", "e", opts_.eps_smoothing ? "no" : "yes");
  sig.add("nc", "nc", std::to_string(opts_.char_order));
  sig.add("nw", "nw", std::to_string(opts_.word_order));
  sig.add("space", "s", opts_.whitespace ? "yes" : "no");
  return sig;
}

std::vector<std::vector<int64_t>> Chrf::segment_stats(const std::vector<std::string>& hyps,
                                                      const std::vector<std::vector<std::string>>& refs,
                                                      std::string* nrefs) const {
  SegmentReferences seg = gather_references(hyps, refs, "chrF");
  if (nrefs) *nrefs = seg.nrefs;
  auto extract = [&](const std::string& raw, size_t segment) {
    std::u32string text = unicode::decode_or_throw(raw, "chrF: segment " + std::to_string(segment + 1));
    if (opts_.lowercase) text = unicode::lower(text);
    SegmentNgrams ng;
    ng.chars = char_ngrams(text, opts_.char_order, opts_.whitespace);
    if (opts_.word_order > 0) {
      auto words = chrf_remove_punctuation(unicode::encode_utf8(text));
      for (int n = 1; n <= opts_.word_order; ++n) ng.words.push_back(word_ngrams(words, n));
    }
    return ng;
  };
  std::vector<std::vector<int64_t>> out(hyps.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    SegmentNgrams h = extract(hyps[i], i);
    double best = -1.0;
    for (const std::string* ref : seg.refs[i]) {
      SegmentNgrams r = extract(*ref, i);
      std::vector<int64_t> stats;
      for (int n = 0; n < opts_.char_order; ++n) match_stats(h.chars[n], r.chars[n], stats);
      for (int n = 0; n < opts_.word_order; ++n) match_stats(h.words[n], r.words[n], stats);
      double f = f_score(stats);
      if (f > best) {  // the first reference wins ties
        best = f;
        out[i] = std::move(stats);
      }
    }
  }
  return out;
}

ChrfScore Chrf::score_from_stats(const std::vector<int64_t>& stats, const std::string& nrefs) const {
  ChrfScore s;
  s.char_order = opts_.char_order;
  s.word_order = opts_.word_order;
  s.beta = opts_.beta;
  s.name = "chrF" + std::to_string(opts_.beta) + std::string(static_cast<size_t>(opts_.word_order), '+');
  s.score = f_score(stats);
  s.signature = signature(nrefs);
  return s;
}

ChrfScore Chrf::corpus_score(const std::vector<std::string>& hyps,
                             const std::vector<std::vector<std::string>>& refs) const {
  std::string nrefs;
  auto per_segment = segment_stats(hyps, refs, &nrefs);
  std::vector<int64_t> total(static_cast<size_t>(3 * (opts_.char_order + opts_.word_order)), 0);
  for (const auto& s : per_segment)
    for (size_t k = 0; k < total.size(); ++k) total[k] += s[k];
  return score_from_stats(total, nrefs);
}

ChrfScore Chrf::sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const {
  std::vector<std::vector<std::string>> streams;
  for (const auto& r : refs) streams.push_back({r});
  return corpus_score({hyp}, streams);
}

ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& opts) {
  return Chrf(opts).corpus_score(hyps, refs);
}

}  // namespace strata::eval
