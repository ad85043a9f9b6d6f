// Preprocessing: parallel text -> SentencePiece ids -> Strata binary datasets.
//
// For every input (split, pair a-b) it writes, in out_dir,
//   <split>.<a>-<b>.<a>.sbin and <split>.<a>-<b>.<b>.sbin
// holding each sentence's piece ids followed by </s> (id 2), fairseq's
// convention. No language token is stored: the batcher prepends the
// target-language token "__tgt__" to the source when it builds a batch, so one
// pair of files serves both directions (see docs/formats.md). It also writes
// manifest.tsv (one row per file) and copies the model to <out_dir>/spm.model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata::data {

struct PreprocessInput {
  std::string split, lang_a, lang_b;
  std::string tsv;             // a<TAB>b per line, or ...
  std::string path_a, path_b;  // ... two line-aligned files
};

struct PreprocessOptions {
  std::string spm_model;
  std::string out_dir;
  std::string dtype = "auto";  // auto (u16 when the vocabulary fits) | u16 | i32
  int threads = 0;             // encoding threads; 0: OpenMP's default
};

struct PreprocessStats {
  std::string split, lang_a, lang_b;
  size_t sentences = 0;
  uint64_t tokens_a = 0, tokens_b = 0;  // </s> included
  uint64_t unk_a = 0, unk_b = 0;        // <unk> pieces (characters the model does not cover)
};

// Runs every input; validates all text before writing anything and throws
// strata::Error with "<file>:<line>: ..." on bad input.
std::vector<PreprocessStats> preprocess(const std::vector<PreprocessInput>& inputs, const PreprocessOptions& opt);

}  // namespace strata::data
