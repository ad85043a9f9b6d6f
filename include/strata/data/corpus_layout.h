// Where corpus files live and what they are called.
//
//   text:     <split>.<a>-<b>.tsv            a<TAB>b per line (fetch_lohelp's output)
//   Strata:   <split>.<a>-<b>.<lang>.sbin    one file per side of a language pair
//   fairseq:  <split>.<a>-<b>.<lang>.idx/.bin
//
// One pair of files serves both directions (a->b and b->a), as in fairseq:
// open_parallel(dir, split, src, tgt) looks for <split>.<src>-<tgt>.* first and
// <split>.<tgt>-<src>.* second. Language codes are ASCII letters, digits and
// '_' (de, pt_br, NLLB's eng_Latn), so the single '-' separates the two languages.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/data/token_dataset.h"

namespace strata::data {

// True for a usable language code: [A-Za-z0-9_]+, not starting with '_'.
bool is_valid_lang_code(const std::string& lang);

struct PairFile {
  std::string path, split, lang_a, lang_b;
};
// Parses a TSV file name "<split>.<a>-<b>.tsv" (directories ignored); nullopt otherwise.
std::optional<PairFile> parse_tsv_name(const std::string& path);
// All "<split>.<a>-<b>.tsv" files of a directory, sorted by name (split filter when non-empty).
std::vector<PairFile> find_tsv_files(const std::string& dir, const std::string& split = "");

// "<dir>/<split>.<a>-<b>.<lang>" (add kBinaryExt, or ".idx"/".bin" for fairseq).
std::string dataset_prefix(const std::string& dir, const std::string& split, const std::string& a,
                           const std::string& b, const std::string& lang);

// The two sides of one translation direction.
struct ParallelDataset {
  std::string split, src_lang, tgt_lang;
  std::shared_ptr<TokenDataset> src, tgt;
  size_t size() const { return src ? src->size() : 0; }
};

// Opens split/src->tgt from dir: Strata .sbin files when present, else a fairseq
// .idx/.bin pair; either pair order. Throws strata::Error listing the paths tried,
// or when the sides hold different sentence counts.
ParallelDataset open_parallel(const std::string& dir, const std::string& split, const std::string& src,
                              const std::string& tgt);

// The dictionary of a fairseq data-bin: <dir>/dict.txt when present, else the
// per-language dict.<lang>.txt files of `langs`, which must all exist and be
// identical (one shared vocabulary, as multilingual fairseq models use). Throws
// strata::Error naming what is missing or which two files differ.
std::string fairseq_dict_path(const std::string& dir, const std::vector<std::string>& langs);

}  // namespace strata::data
