// Training the joint SentencePiece model on a language-balanced sample.
//
// Each language contributes its distinct sentences, capped at
// max_lines_per_lang (a seeded random subset when it has more), so English —
// the side of every pair — does not dominate the pieces. The language tokens
// "__xx__" of every language are user-defined symbols, and the special ids are
// fairseq's (see vocabulary.h): <s>=0 <pad>=1 </s>=2 <unk>=3, then the
// language tokens in sorted order from id 4.
//
// Training runs Debian's `spm_train` program (package sentencepiece): the
// trainer API lives in libsentencepiece_train, which the library does not link.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "strata/data/corpus_layout.h"

namespace strata::data {

struct SpmTrainOptions {
  int vocab_size = 8000;
  size_t max_lines_per_lang = 100000;  // balance cap; 0 = no cap
  std::string model_type = "unigram";  // unigram | bpe
  // 1.0 keeps every character: right for alphabetic scripts, where 0.9995 (SentencePiece's
  // default, meant for CJK) drops letters like ç, Ü and „ from a European corpus.
  double character_coverage = 1.0;
  bool byte_fallback = false;          // unknown characters as byte pieces instead of <unk>
  // Vocabulary size is a soft limit (SentencePiece's hard_vocab_limit=false): tiny
  // corpora then train instead of failing.
  bool soft_vocab_limit = false;
  std::vector<std::string> extra_langs;  // language tokens to add without text (e.g. a zero-shot target)
  uint64_t seed = 1;
  int threads = 0;  // 0: all cores
  bool quiet = true;
  std::string spm_train = "spm_train";  // the program to run
};

struct SpmTrainReport {
  std::string model_path, vocab_path;
  std::map<std::string, size_t> available;  // distinct sentences per language
  std::map<std::string, size_t> sampled;    // lines per language given to the trainer
  std::vector<std::string> lang_tokens;
};

// Distinct sentences per language from TSV pair files (first occurrence order).
std::map<std::string, std::vector<std::string>> collect_sentences(const std::vector<PairFile>& files);

// The balanced sample: per language, all sentences when at most `cap`, else a
// seeded uniform subset of `cap` of them (in their original order).
std::vector<std::string> balanced_sample(const std::vector<std::string>& sentences, size_t cap, uint64_t seed);

// Trains <model_prefix>.model / .vocab; throws strata::Error with the trainer's
// last message when spm_train fails.
SpmTrainReport train_spm(const std::map<std::string, std::vector<std::string>>& by_lang,
                         const std::string& model_prefix, const SpmTrainOptions& opt = {});

}  // namespace strata::data
