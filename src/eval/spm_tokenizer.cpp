// spBLEU's tokenizer: sacreBLEU's tokenizer_spm.py joins the pieces of
// SentencePieceProcessor.EncodeAsPieces(line) with spaces.
#include <sentencepiece_processor.h>

#include "strata/core/error.h"
#include "strata/eval/tokenizers.h"
#include "strata/eval/unicode.h"

namespace strata::eval {
namespace {

std::string basename_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The signature is a '|'- and ':'-separated list, so a model's file stem is
// reduced to characters that cannot break it.
std::string sanitized_stem(const std::string& file) {
  std::string stem = file.substr(0, file.rfind('.'));
  std::string out;
  for (char c : stem) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out.empty() ? "model" : out;
}

class SpmTokenizer : public Tokenizer {
 public:
  SpmTokenizer(const std::string& model_path, const std::string& name) {
    auto status = sp_.Load(model_path);
    STRATA_CHECK(status.ok()) << "tokenizer " << name << ": cannot load SentencePiece model '" << model_path
                              << "': " << status.ToString();
    std::string file = basename_of(model_path);
    if (name == "flores101" || name == "flores200") {
      sig_ = name;
    } else if (file == "sacrebleu_tokenizer_spm.model") {  // sacreBLEU's cached flores101 model
      sig_ = "spm-flores";
    } else {
      sig_ = "spm-" + sanitized_stem(file);
    }
  }

  std::string operator()(std::string_view line) const override {
    STRATA_CHECK(unicode::is_valid_utf8(line)) << "tokenize spm: invalid UTF-8 input";
    std::vector<std::string> pieces;
    auto status = sp_.Encode(line, &pieces);
    STRATA_CHECK(status.ok()) << "tokenize spm: " << status.ToString();
    std::string out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (i) out.push_back(' ');
      out += pieces[i];
    }
    return out;
  }

  std::string signature() const override { return sig_; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::string sig_;
};

}  // namespace

std::shared_ptr<const Tokenizer> make_spm_tokenizer(const std::string& model_path, const std::string& name) {
  return std::make_shared<SpmTokenizer>(model_path, name);
}

}  // namespace strata::eval
