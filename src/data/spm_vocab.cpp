#include "strata/data/spm_vocab.h"

#include <sentencepiece_processor.h>

#include "strata/core/error.h"

namespace strata::data {

SentencePieceVocab::SentencePieceVocab(const std::string& model_path)
    : path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  auto st = sp_->Load(model_path);
  STRATA_CHECK(st.ok()) << "spm: cannot load " << model_path << ": " << st.ToString();
  STRATA_CHECK(sp_->bos_id() == kBosId && sp_->pad_id() == kPadId && sp_->eos_id() == kEosId &&
               sp_->unk_id() == kUnkId)
      << "spm: " << model_path << " has special ids bos=" << sp_->bos_id() << " pad=" << sp_->pad_id()
      << " eos=" << sp_->eos_id() << " unk=" << sp_->unk_id() << ", Strata needs <s>=0 <pad>=1 </s>=2 <unk>=3"
      << " (train the model with train-spm)";
  dropped_.assign(size_t(size()), 0);
  for (int32_t i = 0; i < size(); ++i)
    dropped_[size_t(i)] = (is_special(i) && i != kUnkId) || !lang_of_token(sp_->IdToPiece(i)).empty();
}

SentencePieceVocab::~SentencePieceVocab() = default;

int32_t SentencePieceVocab::size() const { return sp_->GetPieceSize(); }

int32_t SentencePieceVocab::id(const std::string& symbol) const { return sp_->PieceToId(symbol); }

bool SentencePieceVocab::contains(const std::string& symbol) const {
  int32_t i = sp_->PieceToId(symbol);
  return i != kUnkId || symbol == sp_->IdToPiece(kUnkId);
}

std::string SentencePieceVocab::symbol(int32_t id) const {
  STRATA_CHECK(id >= 0 && id < size()) << "spm: id " << id << " out of range for a vocabulary of " << size();
  return sp_->IdToPiece(id);
}

std::string SentencePieceVocab::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> keep;
  keep.reserve(ids.size());
  for (int32_t i : ids) {
    STRATA_CHECK(i >= 0 && i < size()) << "spm decode: id " << i << " out of range for a vocabulary of " << size();
    if (!dropped_[size_t(i)]) keep.push_back(i);
  }
  std::string out;
  auto st = sp_->Decode(keep, &out);
  STRATA_CHECK(st.ok()) << "spm decode: " << st.ToString();
  return out;
}

std::vector<int32_t> SentencePieceVocab::encode(const std::string& text) const {
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  STRATA_CHECK(st.ok()) << "spm encode: " << st.ToString();
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<std::string> SentencePieceVocab::encode_pieces(const std::string& text) const {
  std::vector<std::string> pieces;
  auto st = sp_->Encode(text, &pieces);
  STRATA_CHECK(st.ok()) << "spm encode: " << st.ToString();
  return pieces;
}

}  // namespace strata::data
