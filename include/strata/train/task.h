// The translation task: what the configuration's data section resolves to —
// the vocabulary and the datasets of every direction of a split.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/data/translation_batches.h"
#include "strata/data/vocabulary.h"

namespace strata::train {

// SentencePiece model (format strata: data.spm_model or <data_dir>/spm.model)
// or fairseq dict.txt plus the language tokens of data.langs (format fairseq).
std::shared_ptr<data::Vocabulary> load_vocabulary(const config::DataOptions& o);

// Every direction of data.lang_pairs for `split`; throws naming the missing files.
std::vector<data::Direction> open_directions(const config::Config& cfg, const data::Vocabulary& vocab,
                                             const std::string& split);

data::BatchOptions batch_options(const config::Config& cfg);

}  // namespace strata::train
