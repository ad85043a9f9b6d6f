// chrF and chrF++ exactly as sacreBLEU 2.x computes them (metrics/chrf.py):
// character n-grams of orders 1..6 with whitespace removed (plus word
// n-grams 1..2 for chrF++), statistics summed over the corpus, then the
// F-beta of the precision and recall averaged over the orders that occur
// ("effective order"; or chrF++.py's eps smoothing when asked). With several
// references each segment uses the one with the best sentence F-score.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/eval/score.h"

namespace strata::eval {

struct ChrfOptions {
  int char_order = 6;
  int word_order = 0;  // 2 gives chrF++
  int beta = 2;
  bool lowercase = false;
  bool whitespace = false;     // keep whitespace inside character n-grams
  bool eps_smoothing = false;  // chrF++.py/Moses/NLTK smoothing instead of effective order
};

struct ChrfScore : MetricScore {
  int char_order = 6, word_order = 0, beta = 2;
};

class Chrf {
 public:
  explicit Chrf(ChrfOptions opts = {});

  ChrfScore corpus_score(const std::vector<std::string>& hyps,
                         const std::vector<std::vector<std::string>>& refs) const;
  ChrfScore sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const;

  // Flattened [hyp, ref, match] counts per order (character orders first,
  // then word orders), per segment; sum them and call score_from_stats.
  std::vector<std::vector<int64_t>> segment_stats(const std::vector<std::string>& hyps,
                                                  const std::vector<std::vector<std::string>>& refs,
                                                  std::string* nrefs = nullptr) const;
  ChrfScore score_from_stats(const std::vector<int64_t>& stats, const std::string& nrefs = "1") const;
  // The 0-100 F-score of one set of statistics (sacreBLEU's _compute_f_score).
  double f_score(const std::vector<int64_t>& stats) const;

  Signature signature(const std::string& nrefs) const;
  const ChrfOptions& options() const { return opts_; }

 private:
  ChrfOptions opts_;
};

ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& opts = {});

// chrF++'s word splitting: whitespace tokens, with one ASCII punctuation mark
// split off the end (or else the start) of tokens longer than one character.
std::vector<std::string> chrf_remove_punctuation(const std::string& sentence);

}  // namespace strata::eval
