// What BLEU and chrF have in common with sacreBLEU's Score/Signature classes:
// the reproducibility signature and the text/JSON renderings of a score.
#pragma once
#include <string>
#include <vector>

namespace strata::eval {

// The sacreBLEU release whose defaults and output this module reproduces; it
// is what the `version:` field of every signature says (docs/bleu.md).
inline constexpr const char* kSacreBleuCompatVersion = "2.4.3";

class Signature {
 public:
  struct Entry {
    std::string key, abbr, value;
  };
  void add(std::string key, std::string abbr, std::string value);
  // "nrefs:1|case:mixed|...|version:2.4.3"; short form uses the abbreviations
  // ("#:1|c:mixed|...|v:2.4.3"). The version always comes last.
  std::string format(bool short_form = false) const;
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

struct MetricScore {
  std::string name;     // "BLEU", "chrF2", "chrF2++"
  double score = 0.0;   // 0..100
  std::string verbose;  // BLEU's "63.6/38.9/... (BP = ...)"; empty for chrF
  Signature signature;

  // sacreBLEU's Score.format in text mode:
  //   "<name>|<signature> = <score> <verbose>", or just the score.
  std::string format(int width = 2, bool score_only = false, bool short_signature = false) const;
  // sacreBLEU's Score.format in JSON mode (json.dumps(..., indent=1)).
  std::string to_json(int width = 2) const;
};

// "%.{width}f" as Python formats it (round-half-even on the exact binary value).
std::string format_fixed(double x, int width);
// repr(float): the shortest string that reads back as x.
std::string python_float_repr(double x);
// A JSON string literal as json.dumps(..., ensure_ascii=False) writes it.
std::string json_quote(const std::string& s);

// sacreBLEU's `nrefs:` value: the count of non-empty references per segment
// when it is the same for all, else "var".
std::string nrefs_value(const std::vector<size_t>& per_segment_counts);

}  // namespace strata::eval
