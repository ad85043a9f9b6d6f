#include "strata/eval/unicode.h"

#include <algorithm>
#include <iterator>

#include "strata/core/error.h"
#include "strata/eval/unicode_tables.h"

namespace strata::eval::unicode {
namespace tables = unicode_tables;

namespace {

template <size_t N>
bool in_ranges(const tables::CodeRange (&rs)[N], char32_t cp) {
  // First range whose hi is >= cp; the tables are sorted and disjoint.
  auto it = std::lower_bound(std::begin(rs), std::end(rs), cp,
                             [](const tables::CodeRange& r, char32_t c) { return r.hi < c; });
  return it != std::end(rs) && it->lo <= cp;
}

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Byte length of the valid sequence starting at s[i], or 0 if it is invalid.
// The second-byte limits reject overlongs (E0, F0), surrogates (ED) and code
// points above U+10FFFF (F4), like Python's strict utf-8 codec.
size_t sequence_length(std::string_view s, size_t i) {
  auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (b1 < lo || b1 > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (!is_cont(static_cast<unsigned char>(s[i + k]))) return 0;
  return n;
}

char32_t decode_at(std::string_view s, size_t i, size_t n) {
  auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
  switch (n) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

// One code point's simple lowercase, or 0 when it maps to itself.
char32_t lower_single(char32_t cp) {
  const auto& runs = tables::kLowerRuns;
  auto it = std::upper_bound(std::begin(runs), std::end(runs), cp,
                             [](char32_t c, const tables::LowerRun& r) { return c < r.lo; });
  if (it == std::begin(runs)) return 0;
  --it;
  if (cp > it->hi || (cp - it->lo) % it->step != 0) return 0;
  return static_cast<char32_t>(static_cast<int64_t>(cp) + it->delta);
}

bool is_case_ignorable(char32_t cp) { return in_ranges(tables::kCaseIgnorable, cp); }
bool is_cased(char32_t cp) { return in_ranges(tables::kCasedNotIgnorable, cp); }

// CPython's handle_capital_sigma: U+03A3 at i is final when a cased letter
// precedes it and none follows, skipping case-ignorable code points.
bool final_sigma(std::u32string_view s, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(s[j - 1])) --j;
  if (j == 0 || !is_cased(s[j - 1])) return false;
  size_t k = i + 1;
  while (k < s.size() && is_case_ignorable(s[k])) ++k;
  return k == s.size() || !is_cased(s[k]);
}

}  // namespace

bool decode_utf8(std::string_view s, std::u32string& out, size_t* bad_offset) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = sequence_length(s, i);
    if (n == 0) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    out.push_back(decode_at(s, i, n));
    i += n;
  }
  return true;
}

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  for (size_t i = 0; i < s.size();) {
    size_t n = sequence_length(s, i);
    if (n == 0) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += n;
  }
  return true;
}

std::u32string decode_or_throw(std::string_view s, const std::string& what) {
  std::u32string out;
  size_t bad = 0;
  STRATA_CHECK(decode_utf8(s, out, &bad)) << what << ": invalid UTF-8 at byte " << bad;
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) append_utf8(out, cp);
  return out;
}

bool is_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  return in_ranges(tables::kWhitespace, cp);
}
bool is_punctuation(char32_t cp) { return in_ranges(tables::kPunctuation, cp); }
bool is_symbol(char32_t cp) { return in_ranges(tables::kSymbol, cp); }
bool is_number(char32_t cp) { return in_ranges(tables::kNumber, cp); }

std::vector<std::u32string_view> split_whitespace(std::u32string_view s) {
  std::vector<std::u32string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::vector<std::string_view> split_whitespace_utf8(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0, start = 0;
  bool in_token = false;
  while (i < s.size()) {
    size_t n = sequence_length(s, i);
    STRATA_CHECK(n > 0) << "split: invalid UTF-8 at byte " << i;
    bool space = is_space(decode_at(s, i, n));
    if (space && in_token) out.push_back(s.substr(start, i - start));
    if (!space && !in_token) start = i;
    in_token = !space;
    i += n;
  }
  if (in_token) out.push_back(s.substr(start));
  return out;
}

std::u32string normalize_whitespace(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (auto piece : split_whitespace(s)) {
    if (!out.empty()) out.push_back(U' ');
    out.append(piece);
  }
  return out;
}

std::u32string remove_whitespace(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s)
    if (!is_space(c)) out.push_back(c);
  return out;
}

std::u32string_view rstrip(std::u32string_view s) {
  size_t n = s.size();
  while (n > 0 && is_space(s[n - 1])) --n;
  return s.substr(0, n);
}

std::string_view rstrip_utf8(std::string_view s) {
  size_t n = s.size();
  while (n > 0) {
    size_t start = n - 1;  // back up to the lead byte of the last code point
    while (start > 0 && is_cont(static_cast<unsigned char>(s[start]))) --start;
    size_t len = sequence_length(s, start);
    if (len != n - start || !is_space(decode_at(s, start, len))) break;
    n = start;
  }
  return s.substr(0, n);
}

std::u32string lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t cp = s[i];
    if (cp < 0x80) {
      out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      continue;
    }
    if (cp == 0x3A3) {
      out.push_back(final_sigma(s, i) ? 0x3C2 : 0x3C3);
      continue;
    }
    if (char32_t l = lower_single(cp)) {
      out.push_back(l);
      continue;
    }
    const tables::LowerMulti* multi = nullptr;
    for (const auto& m : tables::kLowerMulti)
      if (m.cp == cp) multi = &m;
    if (multi) {
      for (char32_t o : multi->out)
        if (o) out.push_back(o);
    } else {
      out.push_back(cp);
    }
  }
  return out;
}

std::string lower_utf8(std::string_view s) {
  return encode_utf8(lower(decode_or_throw(s, "lowercase")));
}

}  // namespace strata::eval::unicode
