#include "strata/data/vocabulary.h"

#include "strata/core/error.h"

namespace strata::data {

std::string lang_token(const std::string& lang) { return "__" + lang + "__"; }

std::string lang_of_token(const std::string& s) {
  if (s.size() > 4 && s.compare(0, 2, "__") == 0 && s.compare(s.size() - 2, 2, "__") == 0) {
    std::string lang = s.substr(2, s.size() - 4);
    if (lang.find("__") == std::string::npos && lang.find(' ') == std::string::npos) return lang;
  }
  return "";
}

int32_t Vocabulary::lang_id(const std::string& lang) const {
  std::string tok = lang_token(lang);
  STRATA_CHECK(contains(tok)) << "vocabulary: no language token " << tok << " (the vocabulary has "
                              << languages().size() << " language tokens)";
  return id(tok);
}

std::vector<std::string> Vocabulary::languages() const {
  std::vector<std::string> out;
  for (int32_t i = 0; i < size(); ++i) {
    std::string lang = lang_of_token(symbol(i));
    if (!lang.empty()) out.push_back(lang);
  }
  return out;
}

}  // namespace strata::data
