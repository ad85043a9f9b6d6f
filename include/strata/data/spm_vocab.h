// SentencePiece model as a Vocabulary. Strata's models are trained by
// train_spm (strata/data/spm_train.h) with fairseq's special ids, and loading
// checks them, so SentencePiece ids are model ids without any remapping.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "strata/data/vocabulary.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace strata::data {

class SentencePieceVocab : public Vocabulary {
 public:
  // Loads a .model file; throws strata::Error when it cannot be read or when its
  // special ids differ from <s>=0 <pad>=1 </s>=2 <unk>=3.
  explicit SentencePieceVocab(const std::string& model_path);
  ~SentencePieceVocab() override;
  SentencePieceVocab(const SentencePieceVocab&) = delete;
  SentencePieceVocab& operator=(const SentencePieceVocab&) = delete;

  int32_t size() const override;
  int32_t id(const std::string& symbol) const override;
  bool contains(const std::string& symbol) const override;
  std::string symbol(int32_t id) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;

  // Piece ids of `text`, without </s> (thread-safe).
  std::vector<int32_t> encode(const std::string& text) const;
  // Pieces of `text` as strings ("▁Hello", ...).
  std::vector<std::string> encode_pieces(const std::string& text) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<char> dropped_;  // per id: left out by decode (bos/pad/eos, language tokens)
};

}  // namespace strata::data
