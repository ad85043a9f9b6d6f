// Corpus BLEU exactly as sacreBLEU 2.x computes it (metrics/bleu.py): n-gram
// matches clipped by the maximum count over the references and summed over
// the corpus, the closest reference length (ties to the shorter), brevity
// penalty exp(1 - r/c), and the none/floor/add-k/exp smoothing methods.
// Scores are on sacreBLEU's 0-100 scale.
//
//   eval::Bleu bleu;                              // sacreBLEU's defaults
//   eval::BleuScore s = bleu.corpus_score(hyps, {refs});
//   s.score; s.format(1);  // "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3 = 32.5 ..."
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/eval/score.h"
#include "strata/eval/tokenizers.h"

namespace strata::eval {

enum class SmoothMethod { None, Floor, AddK, Exp };
SmoothMethod parse_smooth_method(const std::string& name);  // none | floor | add-k | exp
std::string smooth_method_name(SmoothMethod m);
// The default value of floor (0.1) and add-k (1); none and exp take none.
std::optional<double> default_smooth_value(SmoothMethod m);

struct BleuOptions {
  std::string tokenize = "13a";  // 13a | none | intl | char | spm | flores101 | flores200
  std::string spm_model;         // model file for the SentencePiece tokenizers
  // When set, used instead of tokenize/spm_model (e.g. to load an SPM model once).
  std::shared_ptr<const Tokenizer> tokenizer;
  bool lowercase = false;
  SmoothMethod smooth_method = SmoothMethod::Exp;
  std::optional<double> smooth_value;  // floor/add-k; default_smooth_value() when unset
  int max_ngram_order = 4;
  // Average only over the orders that have hypothesis n-grams (for sentence
  // BLEU); sacreBLEU's corpus default is off.
  bool effective_order = false;
};

// Sufficient statistics, summable over segments (and over workers).
struct BleuStats {
  int64_t sys_len = 0, ref_len = 0;
  std::vector<int64_t> correct, total;  // per n-gram order 1..N
  BleuStats& operator+=(const BleuStats& o);
};

struct BleuScore : MetricScore {
  std::vector<int64_t> counts, totals;  // clipped matches and hypothesis n-grams per order
  std::vector<double> precisions;       // percent, after smoothing
  double bp = 0.0;
  double ratio = 0.0;                   // sys_len / ref_len (0 when ref_len is 0)
  int64_t sys_len = 0, ref_len = 0;
};

// sacreBLEU's BLEU.compute_bleu: the score from corpus statistics. The
// returned score carries no signature.
BleuScore compute_bleu(const BleuStats& stats, SmoothMethod method, std::optional<double> smooth_value,
                       bool effective_order, int max_ngram_order);

class Bleu {
 public:
  explicit Bleu(BleuOptions opts = {});

  // hyps[i] is scored against refs[r][i] for every reference stream r; empty
  // reference strings are skipped (variable reference counts).
  BleuScore corpus_score(const std::vector<std::string>& hyps,
                         const std::vector<std::vector<std::string>>& refs) const;
  BleuScore sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const;

  // Per-segment statistics and the nrefs signature value, so statistics can
  // be summed elsewhere (e.g. across ranks) and scored with score_from_stats.
  std::vector<BleuStats> segment_stats(const std::vector<std::string>& hyps,
                                       const std::vector<std::vector<std::string>>& refs,
                                       std::string* nrefs = nullptr) const;
  BleuScore score_from_stats(const BleuStats& total, const std::string& nrefs = "1") const;

  // Lowercasing (when asked) then tokenization of rstrip(line).
  std::string preprocess(std::string_view line) const;
  Signature signature(const std::string& nrefs) const;
  const BleuOptions& options() const { return opts_; }

 private:
  BleuStats stats_for(const std::string& hyp, const std::vector<const std::string*>& refs) const;

  BleuOptions opts_;
  std::shared_ptr<const Tokenizer> tok_;
};

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& opts = {});

}  // namespace strata::eval
