#include "strata/data/text_input.h"

#include <fstream>

#include "strata/core/error.h"

namespace strata::data {

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    bool ok = i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Shortest form only; no UTF-16 surrogates; Unicode's upper bound.
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

namespace {

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

// Calls f(line, line_number) for every line; checks UTF-8 and strips "\r".
template <class F>
void for_each_line(const std::string& path, F&& f) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good()) << path << ": cannot open for reading";
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (lineno == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // a byte-order mark is not text
    size_t bad = 0;
    STRATA_CHECK(is_valid_utf8(line, &bad))
        << path << ":" << lineno << ": invalid UTF-8 at byte " << bad + 1 << " of the line";
    f(line, lineno);
  }
  STRATA_CHECK(!in.bad()) << path << ": read error after line " << lineno;
}

}  // namespace

std::vector<std::string> read_text_lines(const std::string& path) {
  std::vector<std::string> lines;
  for_each_line(path, [&](std::string& line, size_t lineno) {
    STRATA_CHECK(!is_blank(line)) << path << ":" << lineno << ": empty line (every line must hold a sentence)";
    lines.push_back(std::move(line));
  });
  return lines;
}

ParallelText read_tsv(const std::string& path) {
  ParallelText out;
  for_each_line(path, [&](std::string& line, size_t lineno) {
    STRATA_CHECK(!is_blank(line)) << path << ":" << lineno << ": empty line (expected 'source<TAB>target')";
    size_t tab = line.find('\t');
    STRATA_CHECK(tab != std::string::npos) << path << ":" << lineno << ": no tab (expected 'source<TAB>target')";
    STRATA_CHECK(line.find('\t', tab + 1) == std::string::npos)
        << path << ":" << lineno << ": more than one tab (expected 'source<TAB>target')";
    std::string_view s(line.data(), tab), t(line.data() + tab + 1, line.size() - tab - 1);
    STRATA_CHECK(!is_blank(s)) << path << ":" << lineno << ": empty source field";
    STRATA_CHECK(!is_blank(t)) << path << ":" << lineno << ": empty target field";
    out.src.emplace_back(s);
    out.tgt.emplace_back(t);
  });
  return out;
}

ParallelText read_parallel(const std::string& src_path, const std::string& tgt_path) {
  ParallelText out;
  out.src = read_text_lines(src_path);
  out.tgt = read_text_lines(tgt_path);
  STRATA_CHECK(out.src.size() == out.tgt.size())
      << src_path << " has " << out.src.size() << " lines but " << tgt_path << " has " << out.tgt.size()
      << " (the two sides must be line-aligned)";
  return out;
}

}  // namespace strata::data
