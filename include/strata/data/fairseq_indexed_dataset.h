// fairseq's MMapIndexedDataset (dataset-impl "mmap"): PREFIX.idx + PREFIX.bin,
// e.g. data-bin/train.en-de.de.idx/.bin, so Strata trains on existing fairseq
// data-bin directories as they are. Index layout (little-endian):
//
//   0   9  magic "MMIDIDX\0\0"
//   9   8  u64 version = 1
//   17  1  u8 dtype code: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 8 u16, 9 u32, 10 u64
//          (6 and 7 are floating point — f64/f64 in fairseq, f32/f64 in some forks —
//          and hold no token ids: rejected)
//   18  8  u64 count
//   26     i32 sizes[count]     (tokens per sentence)
//          i64 pointers[count]  (byte offset of each sentence in .bin)
//
// Megatron-LM's variant inserts u64 doc_count after count and appends
// i64 doc_idx[doc_count]; the two are told apart by the exact file size, and
// both are read. The legacy "TNTIDX" formats (lazy/cached) are not supported.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/data/mapped_file.h"
#include "strata/data/token_dataset.h"

namespace strata::data {

// Element size of a fairseq dtype code; 0 for unknown codes.
size_t fairseq_dtype_size(uint8_t code);
const char* fairseq_dtype_name(uint8_t code);  // "uint16", ...; "unknown" otherwise
bool fairseq_dtype_is_integer(uint8_t code);
// fairseq's best_fitting_int_dtype: uint16 (8) below 65500 symbols, else uint32 (9).
uint8_t fairseq_dtype_for_vocab(int64_t vocab_size);
// True when PREFIX.idx and PREFIX.bin both exist.
bool fairseq_dataset_exists(const std::string& prefix);

class FairseqIndexedDataset : public TokenDataset {
 public:
  // Opens PREFIX.idx/.bin and validates the index against the data file; throws
  // strata::Error "<file>: offset <byte>: ..." on any inconsistency.
  static std::shared_ptr<FairseqIndexedDataset> open(const std::string& prefix);

  size_t size() const override { return count_; }
  int64_t length(size_t i) const override;
  // Ids widened to i32; a value outside [0, 2^31) throws (it cannot be a token id).
  void get(size_t i, std::vector<int32_t>& out) const override;
  using TokenDataset::get;
  uint64_t num_tokens() const override { return ntokens_; }
  const std::string& path() const override { return bin_.path(); }
  uint8_t dtype_code() const { return code_; }
  // Megatron-style document index (empty for fairseq's own files).
  const std::vector<int64_t>& doc_index() const { return doc_idx_; }

 private:
  FairseqIndexedDataset(MappedFile idx, MappedFile bin) : idx_(std::move(idx)), bin_(std::move(bin)) {}
  void validate();
  int32_t size_at(size_t i) const;
  int64_t pointer_at(size_t i) const;
  MappedFile idx_, bin_;
  uint8_t code_ = 0;
  size_t elem_ = 0;
  uint64_t count_ = 0, ntokens_ = 0;
  size_t sizes_at_ = 0, pointers_at_ = 0;
  std::vector<int64_t> doc_idx_;
};

// Writes PREFIX.idx/.bin exactly as fairseq's MMapIndexedDatasetBuilder does
// (contiguous items, pointers in bytes); with_doc_index writes Megatron's variant
// with doc_idx = [0, count].
void write_fairseq_indexed_dataset(const std::string& prefix, const std::vector<std::vector<int32_t>>& sentences,
                                   uint8_t dtype_code, bool with_doc_index = false);

}  // namespace strata::data
