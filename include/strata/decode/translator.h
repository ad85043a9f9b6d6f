// Translation of token-id batches and of raw text with a trained model:
// builds the source as the model was trained ([__tgt__, x, </s>]), forces the
// target-language token as the first output token, runs beam search and turns
// the best hypotheses back into text. The model may live on any device
// (the search reads its log-probabilities on the host).
#pragma once
#include <string>
#include <vector>

#include "strata/data/translation_batches.h"
#include "strata/data/vocabulary.h"
#include "strata/decode/beam_search.h"

namespace strata::decode {

struct TranslateOptions {
  SearchOptions search;        // prefix/bos/eos/pad are filled in from the vocabulary
  bool encoder_langtok = true;
  bool decoder_langtok = true;
  // MoE capacity while decoding as a fraction of the tokens (the reference
  // generates with 1.0: no token is dropped); restored afterwards.
  double moe_capacity_fraction = 1.0;
};

// Hypotheses for a batch built by data::TranslationBatches (its src tensor);
// `tgt_lang_id` per sentence.
std::vector<std::vector<Hypothesis>> translate_batch(model::TransformerModel& model, const data::Vocabulary& vocab,
                                                     const data::Batch& batch,
                                                     const std::vector<int32_t>& tgt_lang_ids,
                                                     const TranslateOptions& opt);

// Source token ids (without language token and </s>) -> hypotheses, batching
// by length with at most max_tokens source tokens per batch; results in input order.
std::vector<std::vector<Hypothesis>> translate_ids(model::TransformerModel& model, const data::Vocabulary& vocab,
                                                   const std::vector<std::vector<int32_t>>& sources,
                                                   int32_t tgt_lang_id, const TranslateOptions& opt,
                                                   int64_t max_tokens = 4096);

}  // namespace strata::decode
