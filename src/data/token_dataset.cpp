#include "strata/data/token_dataset.h"

#include "strata/core/error.h"

namespace strata::data {

std::vector<int32_t> TokenDataset::get(size_t i) const {
  std::vector<int32_t> out;
  get(i, out);
  return out;
}

std::vector<int64_t> TokenDataset::lengths() const {
  std::vector<int64_t> out(size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = length(i);
  return out;
}

void TokenDataset::check_ids(int32_t vocab_size) const {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < size(); ++i) {
    get(i, ids);
    for (size_t k = 0; k < ids.size(); ++k)
      STRATA_CHECK(ids[k] >= 0 && ids[k] < vocab_size)
          << path() << ": sentence " << i << " token " << k << " has id " << ids[k]
          << ", outside the vocabulary of " << vocab_size << " (wrong dictionary for this data?)";
  }
}

void TokenDataset::check_index(size_t i, const char* what) const {
  STRATA_CHECK(i < size()) << what << ": sentence " << i << " out of range for " << size() << " sentences in "
                           << path();
}

}  // namespace strata::data
