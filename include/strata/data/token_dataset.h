// TokenDataset: a read-only list of token-id sequences (one per sentence),
// the common face of Strata's binary dataset (binary_dataset.h) and fairseq's
// mmap .idx/.bin (fairseq_indexed_dataset.h). The batcher sees only this.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace strata::data {

class TokenDataset {
 public:
  virtual ~TokenDataset() = default;
  // Number of sentences.
  virtual size_t size() const = 0;
  // Tokens of sentence i (</s> included where the data has it).
  virtual int64_t length(size_t i) const = 0;
  // Replaces `out` with the ids of sentence i.
  virtual void get(size_t i, std::vector<int32_t>& out) const = 0;
  virtual uint64_t num_tokens() const = 0;
  // File the data lives in (for messages).
  virtual const std::string& path() const = 0;

  std::vector<int32_t> get(size_t i) const;
  std::vector<int64_t> lengths() const;
  // Scans every id; throws strata::Error naming the file, sentence and id when one
  // is negative or >= vocab_size (e.g. a data-bin paired with the wrong dict.txt).
  void check_ids(int32_t vocab_size) const;

 protected:
  // Throws "<what>: sentence i out of range for N sentences in <path>".
  void check_index(size_t i, const char* what) const;
};

}  // namespace strata::data
