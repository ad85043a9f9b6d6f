// Vocabulary: the id <-> symbol mapping shared by the SentencePiece model
// (our own corpora) and fairseq's dict.txt (existing data-bin). Both follow
// fairseq's special-symbol ids, so a model, a batcher or a decoder never needs
// to know which one it got:
//   <s> = 0 (bos), <pad> = 1, </s> = 2 (eos), <unk> = 3.
// Language tokens are symbols "__xx__" (fairseq's "multilingual" style).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata::data {

constexpr int32_t kBosId = 0;
constexpr int32_t kPadId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kUnkId = 3;
constexpr int32_t kNumSpecial = 4;

// "__de__" for "de".
std::string lang_token(const std::string& lang);
// "de" for "__de__"; empty when `symbol` is not a language token.
std::string lang_of_token(const std::string& symbol);

class Vocabulary {
 public:
  virtual ~Vocabulary() = default;
  virtual int32_t size() const = 0;
  // Id of `symbol`, or kUnkId when absent.
  virtual int32_t id(const std::string& symbol) const = 0;
  virtual bool contains(const std::string& symbol) const = 0;
  // Symbol of `id` (throws strata::Error when out of range).
  virtual std::string symbol(int32_t id) const = 0;
  // Detokenised text of `ids`; specials and language tokens are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  int32_t bos() const { return kBosId; }
  int32_t pad() const { return kPadId; }
  int32_t eos() const { return kEosId; }
  int32_t unk() const { return kUnkId; }
  // Id of "__<lang>__"; throws strata::Error naming the language when absent.
  int32_t lang_id(const std::string& lang) const;
  bool is_special(int32_t id) const { return id >= 0 && id < kNumSpecial; }
  // Languages whose tokens this vocabulary holds, in id order.
  std::vector<std::string> languages() const;
};

}  // namespace strata::data
