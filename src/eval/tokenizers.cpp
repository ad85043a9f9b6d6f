// Ports of sacreBLEU 2.x tokenizer_13a.py / tokenizer_re.py,
// tokenizer_intl.py, tokenizer_char.py and tokenizer_none.py. Each regex
// substitution is a left-to-right scan that consumes the characters it
// matched, which is what re.sub does with these non-overlapping patterns.
#include "strata/eval/tokenizers.h"

#include "strata/core/error.h"
#include "strata/eval/unicode.h"

namespace strata::eval {
namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }  // [0-9]: ASCII only
bool is_period_comma(char32_t c) { return c == '.' || c == ','; }

// The class [\{-\~\[-\` -\&\(-\+\:-\@\/] of the first 13a regex.
bool is_13a_split(char32_t c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
         (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

// re.sub(r'(A)(B)', r'<pre>\1<mid>\2<post>') for single-character classes A, B.
template <class PA, class PB>
std::u32string sub_pairs(const std::u32string& s, PA a, PB b, std::u32string_view pre,
                         std::u32string_view mid, std::u32string_view post) {
  std::u32string out;
  out.reserve(s.size() + s.size() / 2);
  size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && a(s[i]) && b(s[i + 1])) {
      out.append(pre);
      out.push_back(s[i]);
      out.append(mid);
      out.push_back(s[i + 1]);
      out.append(post);
      i += 2;
    } else {
      out.push_back(s[i]);
      ++i;
    }
  }
  return out;
}

// re.sub(r'(A)', r' \1 ') for a single-character class A.
template <class PA>
std::u32string pad_chars(const std::u32string& s, PA a) {
  std::u32string out;
  out.reserve(s.size() + s.size() / 2);
  for (char32_t c : s) {
    if (a(c)) {
      out.push_back(U' ');
      out.push_back(c);
      out.push_back(U' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string tokenize_13a(std::string_view line) {
  STRATA_CHECK(unicode::is_valid_utf8(line)) << "tokenize 13a: invalid UTF-8 input";
  // Language-independent part (mteval-v13a's "normalization").
  std::string t(line);
  replace_all(t, "<skipped>", "");
  replace_all(t, "-\n", "");
  replace_all(t, "\n", " ");
  if (t.find('&') != std::string::npos) {
    replace_all(t, "&quot;", "\"");
    replace_all(t, "&amp;", "&");
    replace_all(t, "&lt;", "<");
    replace_all(t, "&gt;", ">");
  }
  // The padding spaces let the period/comma rules fire at both ends.
  std::u32string s = U" " + unicode::decode_or_throw(t, "tokenize 13a") + U" ";
  auto not_digit = [](char32_t c) { return !is_digit(c); };
  s = pad_chars(s, is_13a_split);
  // Period and comma unless preceded by a digit: ([^0-9])([\.,]) -> \1 \2
  s = sub_pairs(s, not_digit, is_period_comma, U"", U" ", U" ");
  // Period and comma unless followed by a digit: ([\.,])([^0-9]) -> " \1 \2"
  s = sub_pairs(s, is_period_comma, not_digit, U" ", U" ", U"");
  // Dash preceded by a digit: ([0-9])(-) -> \1 \2
  s = sub_pairs(s, is_digit, [](char32_t c) { return c == '-'; }, U"", U" ", U" ");
  return unicode::encode_utf8(unicode::normalize_whitespace(s));
}

std::string tokenize_intl(std::string_view line) {
  std::u32string s = unicode::decode_or_throw(line, "tokenize intl");
  auto not_number = [](char32_t c) { return !unicode::is_number(c); };
  // Punctuation preceded by a non-number: (\P{N})(\p{P}) -> \1 \2
  s = sub_pairs(s, not_number, unicode::is_punctuation, U"", U" ", U" ");
  // Punctuation followed by a non-number: (\p{P})(\P{N}) -> " \1 \2"
  s = sub_pairs(s, unicode::is_punctuation, not_number, U" ", U" ", U"");
  // Every symbol: (\p{S}) -> " \1 "
  s = pad_chars(s, unicode::is_symbol);
  return unicode::encode_utf8(unicode::normalize_whitespace(s));
}

std::string tokenize_char(std::string_view line) {
  // " ".join(line): whitespace characters become tokens of the joined string
  // too, and vanish when BLEU splits it.
  std::u32string s = unicode::decode_or_throw(line, "tokenize char");
  std::string out;
  out.reserve(line.size() * 2);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out.push_back(' ');
    unicode::append_utf8(out, s[i]);
  }
  return out;
}

namespace {

class FunctionTokenizer : public Tokenizer {
 public:
  FunctionTokenizer(std::string (*fn)(std::string_view), std::string sig) : fn_(fn), sig_(std::move(sig)) {}
  std::string operator()(std::string_view line) const override { return fn_(line); }
  std::string signature() const override { return sig_; }

 private:
  std::string (*fn_)(std::string_view);
  std::string sig_;
};

std::string tokenize_none(std::string_view line) {
  STRATA_CHECK(unicode::is_valid_utf8(line)) << "tokenize none: invalid UTF-8 input";
  return std::string(line);
}

}  // namespace

std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& name, const std::string& spm_model) {
  if (name == "13a") return std::make_shared<FunctionTokenizer>(tokenize_13a, "13a");
  if (name == "intl") return std::make_shared<FunctionTokenizer>(tokenize_intl, "intl");
  if (name == "char") return std::make_shared<FunctionTokenizer>(tokenize_char, "char");
  if (name == "none") return std::make_shared<FunctionTokenizer>(tokenize_none, "none");
  if (name == "spm" || name == "flores101" || name == "flores200") {
    STRATA_CHECK(!spm_model.empty())
        << "tokenizer " << name
        << ": needs a SentencePiece model file (--spm-model PATH); sacreBLEU's FLORES model cannot be "
           "downloaded here";
    return make_spm_tokenizer(spm_model, name);
  }
  STRATA_FAIL() << "unknown tokenizer '" << name << "' (expected 13a, none, intl, char, spm, flores101, flores200)";
  return nullptr;
}

}  // namespace strata::eval
