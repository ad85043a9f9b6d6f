// fairseq's Dictionary (dict.txt of a fairseq data-bin) as a Vocabulary.
// Ids: <s>=0 <pad>=1 </s>=2 <unk>=3, then the file's symbols in order, one
// "symbol count" line each ("symbol count #fairseq:overwrite" re-binds a
// symbol that already exists to a new id, as fairseq does). Multilingual
// fairseq tasks then append the language tokens "__xx__" in the order of
// --langs; add_lang_tokens does the same, so ids match the reference model.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "strata/data/vocabulary.h"

namespace strata::data {

class FairseqDictionary : public Vocabulary {
 public:
  // Only the four specials.
  FairseqDictionary();
  // Loads dict.txt; throws strata::Error "<path>:<line>: ..." on a malformed line
  // or a duplicate symbol without the overwrite flag (fairseq's rules).
  static FairseqDictionary load(const std::string& path);

  int32_t size() const override { return int32_t(symbols_.size()); }
  int32_t id(const std::string& symbol) const override;
  bool contains(const std::string& symbol) const override { return index_.count(symbol) != 0; }
  std::string symbol(int32_t id) const override;
  // Symbols joined by spaces, then SentencePiece's "▁" turned back into spaces
  // (fairseq's --post-process sentencepiece); specials and language tokens dropped,
  // <unk> kept.
  std::string decode(const std::vector<int32_t>& ids) const override;

  // Appends `symbol` (or adds `count` to an existing one, unless overwrite) and returns its id.
  int32_t add_symbol(const std::string& symbol, int64_t count = 1, bool overwrite = false);
  // Appends "__xx__" for every language not present yet, in the given order.
  void add_lang_tokens(const std::vector<std::string>& langs);
  int64_t count(int32_t id) const;
  // Writes the dict.txt format (all symbols after the specials).
  void save(const std::string& path) const;
  // Ids of space-separated symbols (unknown ones map to <unk>), without </s>.
  std::vector<int32_t> encode_symbols(const std::string& line) const;

 private:
  std::vector<std::string> symbols_;
  std::vector<int64_t> counts_;
  std::unordered_map<std::string, int32_t> index_;
};

}  // namespace strata::data
