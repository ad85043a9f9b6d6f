// Strata's binarised corpus: one file per (split, language pair, side), laid
// out as documented in docs/formats.md:
//
//   offset  size  field (little-endian)
//   0       8     magic "STRATATK"
//   8       4     u32 version = 1
//   12      4     u32 dtype: 1 = u16 ids, 2 = i32 ids
//   16      8     u64 count: sentences
//   24      8     u64 ntokens: ids in the file
//   32      4     u32 vocab_size: every id is in [0, vocab_size)
//   36      4     u32 reserved = 0
//   40      8     u64 FNV-1a 64 of the offsets section
//   48      8     u64 FNV-1a 64 of the token section
//   56      8     u64 reserved = 0
//   64            u64 offsets[count + 1]: sentence i is tokens[offsets[i], offsets[i+1])
//   64+8(count+1) tokens[ntokens] of the dtype
//
// The reader maps the file and validates all of it (size, header, offsets,
// checksums, id range) before use, reporting "<file>: offset <byte>: <what>".
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "strata/data/mapped_file.h"
#include "strata/data/token_dataset.h"

namespace strata::data {

enum class TokenDType : uint32_t { U16 = 1, I32 = 2 };

constexpr char kBinaryMagic[9] = "STRATATK";
constexpr uint32_t kBinaryVersion = 1;
constexpr size_t kBinaryHeaderSize = 64;
// Extension of Strata dataset files: train.en-de.de.sbin.
constexpr const char* kBinaryExt = ".sbin";

const char* token_dtype_name(TokenDType t);
size_t token_dtype_size(TokenDType t);
// u16 when every id fits (vocab_size <= 65536), i32 otherwise.
TokenDType token_dtype_for_vocab(int64_t vocab_size);

// FNV-1a 64-bit hash, continued from `h` (start with kFnvOffset).
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnvOffset);

// Streams sentences to disk. Token ids go to a side file while the offsets stay
// in memory (8 bytes a sentence); finish() writes header + offsets + ids to
// "<path>.tmp" and renames it, so a crash never leaves a half-written dataset.
class BinaryDatasetWriter {
 public:
  BinaryDatasetWriter(const std::string& path, TokenDType dtype, int32_t vocab_size);
  ~BinaryDatasetWriter();  // removes temporary files when finish() was not reached
  BinaryDatasetWriter(const BinaryDatasetWriter&) = delete;
  BinaryDatasetWriter& operator=(const BinaryDatasetWriter&) = delete;

  // Appends one sentence; every id must lie in [0, vocab_size).
  void add(const std::vector<int32_t>& ids);
  void finish();
  size_t size() const { return offsets_.size() - 1; }
  uint64_t num_tokens() const { return offsets_.back(); }

 private:
  std::string path_, tokens_path_;
  TokenDType dtype_;
  int32_t vocab_size_;
  std::vector<uint64_t> offsets_{0};
  std::FILE* tokens_ = nullptr;
  uint64_t tokens_hash_ = kFnvOffset;
  std::vector<uint8_t> buf_;
  bool finished_ = false;
};

class BinaryDataset : public TokenDataset {
 public:
  struct Options {
    // Hash both sections and range-check every id at open (one pass over the file).
    bool verify_contents = true;
  };
  // Opens and validates; throws strata::Error "<path>: offset <byte>: ..." on corruption.
  static std::shared_ptr<BinaryDataset> open(const std::string& path);
  static std::shared_ptr<BinaryDataset> open(const std::string& path, Options opt);

  size_t size() const override { return count_; }
  int64_t length(size_t i) const override;
  void get(size_t i, std::vector<int32_t>& out) const override;
  using TokenDataset::get;
  uint64_t num_tokens() const override { return ntokens_; }
  const std::string& path() const override { return file_.path(); }
  TokenDType dtype() const { return dtype_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  explicit BinaryDataset(MappedFile f) : file_(std::move(f)) {}
  void validate(const Options& opt);
  uint64_t offset(size_t i) const;  // offsets[i]
  MappedFile file_;
  TokenDType dtype_ = TokenDType::U16;
  uint64_t count_ = 0, ntokens_ = 0;
  int32_t vocab_size_ = 0;
  size_t tokens_at_ = 0;  // byte offset of tokens[0]
};

// Writes a whole dataset at once (tests, small tools).
void write_binary_dataset(const std::string& path, const std::vector<std::vector<int32_t>>& sentences,
                          TokenDType dtype, int32_t vocab_size);

}  // namespace strata::data
