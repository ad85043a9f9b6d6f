// Reading parallel text for preprocessing: TSV files ("source<TAB>target" per
// line) or a pair of line-aligned plain files. Everything is validated up front
// so that a bad corpus fails with one line naming the file and line number
// ("corpus/train.en-de.tsv:17: no tab ...") instead of producing a silently
// misaligned dataset.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace strata::data {

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, no code
// points above U+10FFFF). On failure *bad_offset (when given) receives the byte
// offset of the first invalid sequence.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Two aligned sides of a corpus: src[i] translates to tgt[i].
struct ParallelText {
  std::vector<std::string> src, tgt;
  size_t size() const { return src.size(); }
};

// All lines of a UTF-8 text file, without line terminators ("\n" or "\r\n") or a
// leading byte-order mark.
// Throws strata::Error "<path>:<line>: ..." on an empty (or blank) line or invalid
// UTF-8, and "<path>: ..." when the file cannot be read.
std::vector<std::string> read_text_lines(const std::string& path);

// A TSV corpus: exactly one tab per line, both fields non-blank, valid UTF-8.
ParallelText read_tsv(const std::string& path);

// Two line-aligned files; their line counts must match.
ParallelText read_parallel(const std::string& src_path, const std::string& tgt_path);

}  // namespace strata::data
