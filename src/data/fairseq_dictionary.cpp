#include "strata/data/fairseq_dictionary.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "strata/core/error.h"

namespace strata::data {

FairseqDictionary::FairseqDictionary() {
  // Order fixes the ids: bos, pad, eos, unk (fairseq's Dictionary.__init__).
  for (const char* s : {"<s>", "<pad>", "</s>", "<unk>"}) add_symbol(s);
}

int32_t FairseqDictionary::add_symbol(const std::string& symbol, int64_t count, bool overwrite) {
  auto it = index_.find(symbol);
  if (it != index_.end() && !overwrite) {
    counts_[size_t(it->second)] += count;
    return it->second;
  }
  // New id; with overwrite the old id keeps its symbol but lookups now find the new one.
  int32_t id = int32_t(symbols_.size());
  index_[symbol] = id;
  symbols_.push_back(symbol);
  counts_.push_back(count);
  return id;
}

namespace {
// Parses a whole string as a base-10 integer (Python's int() accepts surrounding spaces; rstrip removed them).
bool parse_count(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}
}  // namespace

FairseqDictionary FairseqDictionary::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good()) << "fairseq dict: cannot open " << path;
  FairseqDictionary d;
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    // Python's rstrip(): drop trailing whitespace, "\r" included.
    size_t end = line.find_last_not_of(" \t\r\n\f\v");
    line.erase(end == std::string::npos ? 0 : end + 1);
    size_t sp = line.rfind(' ');
    STRATA_CHECK(sp != std::string::npos)
        << path << ":" << lineno << ": expected '<symbol> <count> [#fairseq:overwrite]', got \"" << line << "\"";
    std::string word = line.substr(0, sp), field = line.substr(sp + 1);
    bool overwrite = false;
    if (field == "#fairseq:overwrite") {
      overwrite = true;
      sp = word.rfind(' ');
      STRATA_CHECK(sp != std::string::npos)
          << path << ":" << lineno << ": expected '<symbol> <count> #fairseq:overwrite', got \"" << line << "\"";
      field = word.substr(sp + 1);
      word = word.substr(0, sp);
    }
    int64_t count = 0;
    STRATA_CHECK(parse_count(field, &count))
        << path << ":" << lineno << ": count '" << field << "' is not an integer in \"" << line << "\"";
    STRATA_CHECK(overwrite || !d.contains(word))
        << path << ":" << lineno << ": duplicate symbol '" << word
        << "' (add the #fairseq:overwrite flag to the line to re-bind it)";
    d.add_symbol(word, count, overwrite);
  }
  STRATA_CHECK(!in.bad()) << "fairseq dict: read error in " << path;
  return d;
}

int32_t FairseqDictionary::id(const std::string& symbol) const {
  auto it = index_.find(symbol);
  return it == index_.end() ? kUnkId : it->second;
}

std::string FairseqDictionary::symbol(int32_t id) const {
  STRATA_CHECK(id >= 0 && id < size()) << "fairseq dict: id " << id << " out of range for a dictionary of "
                                       << size();
  return symbols_[size_t(id)];
}

int64_t FairseqDictionary::count(int32_t id) const {
  STRATA_CHECK(id >= 0 && id < size()) << "fairseq dict: id " << id << " out of range for a dictionary of "
                                       << size();
  return counts_[size_t(id)];
}

void FairseqDictionary::add_lang_tokens(const std::vector<std::string>& langs) {
  for (const auto& l : langs)
    if (!contains(lang_token(l))) add_symbol(lang_token(l));
}

std::string FairseqDictionary::decode(const std::vector<int32_t>& ids) const {
  std::string joined;
  for (int32_t i : ids) {
    STRATA_CHECK(i >= 0 && i < size()) << "fairseq dict decode: id " << i << " out of range for a dictionary of "
                                       << size();
    const std::string& s = symbols_[size_t(i)];
    if ((is_special(i) && i != kUnkId) || !lang_of_token(s).empty()) continue;
    if (!joined.empty()) joined += ' ';
    joined += s;
  }
  // sentencepiece post-processing: remove the spaces between pieces, then "▁" -> " ".
  std::string out;
  out.reserve(joined.size());
  static const std::string kMark = "\xE2\x96\x81";  // U+2581
  for (size_t i = 0; i < joined.size();) {
    if (joined.compare(i, kMark.size(), kMark) == 0) {
      out += ' ';
      i += kMark.size();
    } else {
      if (joined[i] != ' ') out += joined[i];
      ++i;
    }
  }
  size_t b = out.find_first_not_of(' '), e = out.find_last_not_of(' ');
  return b == std::string::npos ? std::string() : out.substr(b, e - b + 1);
}

void FairseqDictionary::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  STRATA_CHECK(out.good()) << "fairseq dict: cannot write " << path;
  // A symbol seen before (specials included) was re-bound: it needs the flag to load back.
  std::unordered_map<std::string, bool> seen;
  for (size_t i = 0; i < symbols_.size(); ++i) {
    bool again = !seen.emplace(symbols_[i], true).second;
    if (i < size_t(kNumSpecial)) continue;
    out << symbols_[i] << ' ' << counts_[i] << (again ? " #fairseq:overwrite" : "") << '\n';
  }
  STRATA_CHECK(out.good()) << "fairseq dict: write error on " << path;
}

std::vector<int32_t> FairseqDictionary::encode_symbols(const std::string& line) const {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  std::string w;
  while (in >> w) ids.push_back(id(w));
  return ids;
}

}  // namespace strata::data
