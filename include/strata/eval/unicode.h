// The slice of Python's str semantics that sacreBLEU relies on, over UTF-8
// text: strict decoding (what open(..., encoding="utf-8") accepts),
// str.isspace()/split()/rstrip(), str.lower() with the Final_Sigma rule, and
// the general-category classes that the `regex` module's \p{P} \p{S} \p{N}
// match. Tables come from include/strata/eval/unicode_tables.h (generated).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace strata::eval::unicode {

// Decodes strict UTF-8 (no overlongs, surrogates or code points past
// U+10FFFF). Returns false on the first invalid sequence and stores its byte
// offset in *bad_offset when given.
bool decode_utf8(std::string_view s, std::u32string& out, size_t* bad_offset = nullptr);
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Like decode_utf8 but throws strata::Error "<what>: invalid UTF-8 at byte N".
std::u32string decode_or_throw(std::string_view s, const std::string& what);

std::string encode_utf8(std::u32string_view s);
void append_utf8(std::string& out, char32_t cp);

bool is_space(char32_t cp);        // str.isspace()
bool is_punctuation(char32_t cp);  // general category P*
bool is_symbol(char32_t cp);       // general category S*
bool is_number(char32_t cp);       // general category N*

// str.split() with no separator: runs of whitespace separate, and leading or
// trailing whitespace yields no empty pieces.
std::vector<std::u32string_view> split_whitespace(std::u32string_view s);
// str.split() on UTF-8 bytes (the input must be valid UTF-8).
std::vector<std::string_view> split_whitespace_utf8(std::string_view s);
// ' '.join(s.split())
std::u32string normalize_whitespace(std::u32string_view s);
// ''.join(s.split())
std::u32string remove_whitespace(std::u32string_view s);
std::u32string_view rstrip(std::u32string_view s);
std::string_view rstrip_utf8(std::string_view s);  // same, on UTF-8 bytes

// str.lower(): full lowercase mapping (U+0130 becomes two code points) and
// U+03A3 becomes final sigma in the Final_Sigma context.
std::u32string lower(std::u32string_view s);
std::string lower_utf8(std::string_view s);

}  // namespace strata::eval::unicode
