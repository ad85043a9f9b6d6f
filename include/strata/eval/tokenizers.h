// sacreBLEU's BLEU tokenizers over UTF-8 strings: each returns the tokens
// joined by single spaces, exactly as the Python tokenizer returns its string.
//   13a   mteval-v13a (sacreBLEU's default): unescape, then split ASCII
//         punctuation, keeping '.' and ',' inside numbers.
//   intl  mteval-v14 international: split Unicode punctuation (P*) unless it
//         sits between digits, and every symbol (S*).
//   char  every code point is a token.
//   none  the line as it is.
//   spm   SentencePiece pieces from a user-supplied model (spBLEU).
#pragma once
#include <memory>
#include <string>
#include <string_view>

namespace strata::eval {

std::string tokenize_13a(std::string_view line);
std::string tokenize_intl(std::string_view line);
std::string tokenize_char(std::string_view line);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Tokenizes one UTF-8 line; throws strata::Error on invalid UTF-8.
  virtual std::string operator()(std::string_view line) const = 0;
  // The value of the `tok:` field in the metric signature.
  virtual std::string signature() const = 0;
};

// name: 13a | none | intl | char | spm | flores101 | flores200. The three
// SentencePiece names need spm_model (a .model file path); sacreBLEU would
// download its FLORES model, which is not possible here (docs/bleu.md).
std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& name,
                                                const std::string& spm_model = "");

// SentencePiece tokenizer. The signature follows sacreBLEU ("spm-flores",
// "flores101", "flores200") when `name` says which model it is; for spm with
// a model file not named like sacreBLEU's, it is "spm-<model file stem>".
std::shared_ptr<const Tokenizer> make_spm_tokenizer(const std::string& model_path,
                                                    const std::string& name = "spm");

}  // namespace strata::eval
