// Batched beam search (fairseq's SequenceGenerator semantics) and greedy
// search over the model's incremental decoder.
//
// Each sentence keeps `beam` live hypotheses. At every step the 2*beam best
// extensions over all live hypotheses are ranked; an extension ending in EOS
// among the top `beam` is finished with score sum(log p) / length^lenpen
// (length counts EOS and the forced prefix); the first `beam` non-EOS
// extensions stay live. A sentence is done when it has `beam` finished
// hypotheses or reaches its length limit (where EOS is forced); finished
// sentences leave the batch, so the work shrinks as sentences complete.
#pragma once
#include <vector>

#include "strata/model/transformer_model.h"

namespace strata::decode {

struct SearchOptions {
  int beam = 5;
  double lenpen = 1.0;
  double max_len_a = 1.2;  // output limit: a * source_len + b tokens (before EOS)
  int max_len_b = 10;
  int nbest = 1;
  int64_t bos = 2;   // first decoder input (fairseq uses EOS)
  int64_t eos = 2;
  int64_t pad = 1;
  int64_t unk = 3;
  bool allow_unk = true;
  std::vector<int64_t> prefix;  // tokens forced after BOS (the target-language token)
};

struct Hypothesis {
  std::vector<int64_t> tokens;  // generated tokens after the prefix, without EOS
  double score = 0;             // length-normalised log-probability
  std::vector<float> positional_scores;  // log p of each output token incl. prefix and EOS
};

// src_ids [B, S] right-padded; returns up to nbest hypotheses per sentence,
// best first. Beam 1 is greedy search.
std::vector<std::vector<Hypothesis>> beam_search(model::TransformerModel& model, const Tensor& src_ids,
                                                 const SearchOptions& opt);

}  // namespace strata::decode
