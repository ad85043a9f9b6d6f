// Token-budget batches for multilingual translation.
//
// Each direction (src -> tgt) contributes examples laid out as in the
// reference (--encoder-langtok tgt --decoder-langtok):
//   source      [__tgt__, x_1 .. x_n, </s>]
//   decoder in  [</s>, __tgt__, y_1 .. y_m]
//   target      [__tgt__, y_1 .. y_m, </s>]
// An epoch's plan is a pure function of (seed, epoch): directions are
// sampled with temperature T (direction i gets round(N * p_i) examples,
// p_i ~ n_i^(1/T); T = 1 keeps every example once), examples are sorted by
// length (ties broken randomly), cut into batches whose padded size
// (sentences x longest side) stays within max_tokens, and the batch order is
// shuffled. The position in an epoch is a batch index, so resuming needs only
// (epoch, index).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/data/corpus_layout.h"

namespace strata::data {

struct Direction {
  ParallelDataset data;
  int32_t tgt_lang_id = 0;  // id of __tgt__ in the vocabulary
  std::string name() const { return data.src_lang + "-" + data.tgt_lang; }
};

struct BatchOptions {
  int64_t max_tokens = 4096;
  int64_t max_sentences = 0;     // 0 = no limit
  int64_t max_source_len = 512;  // including the language token and </s>
  int64_t max_target_len = 512;
  double temperature = 1.0;
  uint64_t seed = 1;
  int32_t pad = 1, eos = 2;
  bool encoder_langtok = true;
  bool decoder_langtok = true;
};

struct ExampleRef {
  uint32_t direction = 0;
  uint32_t index = 0;  // sentence index within the direction's datasets
  int32_t src_len = 0, tgt_len = 0;  // lengths with the added tokens
};

struct Batch {
  Tensor src;     // [B, S] i64, right-padded
  Tensor prev;    // [B, T] i64 decoder input
  Tensor target;  // [B, T] i64
  int64_t src_tokens = 0, tgt_tokens = 0;  // non-pad tokens
  std::vector<uint32_t> direction;         // per sentence
  std::vector<uint32_t> index;             // per sentence
  int64_t size() const { return src.defined() ? src.size(0) : 0; }
};

class TranslationBatches {
 public:
  TranslationBatches(std::vector<Direction> directions, BatchOptions options);

  // The batches of one training epoch (see the header comment).
  std::vector<std::vector<ExampleRef>> epoch_plan(int64_t epoch) const;
  // Every example of one direction once, in length order, without sampling
  // (validation, test, decoding).
  std::vector<std::vector<ExampleRef>> ordered_plan(size_t direction) const;
  Batch make_batch(const std::vector<ExampleRef>& refs) const;

  const std::vector<Direction>& directions() const { return dirs_; }
  // Examples left out for exceeding the length limits, per direction.
  const std::vector<int64_t>& skipped() const { return skipped_; }
  int64_t num_examples() const;

 private:
  std::vector<std::vector<ExampleRef>> cut(std::vector<ExampleRef> examples, uint64_t tie_seed) const;
  std::vector<Direction> dirs_;
  BatchOptions opt_;
  std::vector<std::vector<ExampleRef>> usable_;  // per direction, within the length limits
  std::vector<int64_t> skipped_;
};

}  // namespace strata::data
