#include "strata/data/preprocess.h"

#include <omp.h>
#include <sys/stat.h>

#include <fstream>
#include <set>

#include "strata/core/error.h"
#include "strata/data/binary_dataset.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/text_input.h"

namespace strata::data {

namespace {

ParallelText read_input(const PreprocessInput& in) {
  if (!in.tsv.empty()) {
    STRATA_CHECK(in.path_a.empty() && in.path_b.empty())
        << "preprocess: give either a TSV file or two plain files for " << in.split << "." << in.lang_a << "-"
        << in.lang_b << ", not both";
    return read_tsv(in.tsv);
  }
  STRATA_CHECK(!in.path_a.empty() && !in.path_b.empty())
      << "preprocess: no input files for " << in.split << "." << in.lang_a << "-" << in.lang_b;
  return read_parallel(in.path_a, in.path_b);
}

struct Encoded {
  std::vector<std::vector<int32_t>> ids;
  uint64_t tokens = 0, unk = 0;
};

Encoded encode_all(const SentencePieceVocab& vocab, const std::vector<std::string>& lines, int threads) {
  Encoded e;
  e.ids.resize(lines.size());
  uint64_t tokens = 0, unk = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 256) reduction(+ : tokens, unk)
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<int32_t> ids = vocab.encode(lines[i]);
    ids.push_back(kEosId);
    for (int32_t id : ids) unk += id == kUnkId;
    tokens += ids.size();
    e.ids[i] = std::move(ids);
  }
  e.tokens = tokens;
  e.unk = unk;
  return e;
}

void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  STRATA_CHECK(in.good()) << "preprocess: cannot read " << from;
  std::ofstream out(to + ".tmp", std::ios::binary);
  out << in.rdbuf();
  out.close();
  STRATA_CHECK(out.good()) << "preprocess: cannot write " << to;
  STRATA_CHECK(std::rename((to + ".tmp").c_str(), to.c_str()) == 0) << "preprocess: cannot rename to " << to;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

std::vector<PreprocessStats> preprocess(const std::vector<PreprocessInput>& inputs, const PreprocessOptions& opt) {
  STRATA_CHECK(!inputs.empty()) << "preprocess: no inputs";
  STRATA_CHECK(!opt.out_dir.empty()) << "preprocess: no output directory";
  SentencePieceVocab vocab(opt.spm_model);
  TokenDType dtype = TokenDType::I32;
  if (opt.dtype == "auto")
    dtype = token_dtype_for_vocab(vocab.size());
  else if (opt.dtype == "u16")
    dtype = TokenDType::U16;
  else if (opt.dtype == "i32")
    dtype = TokenDType::I32;
  else
    STRATA_FAIL() << "preprocess: dtype must be auto, u16 or i32, got '" << opt.dtype << "'";
  STRATA_CHECK(dtype == TokenDType::I32 || vocab.size() <= 65536)
      << "preprocess: a vocabulary of " << vocab.size() << " needs --dtype i32";

  std::set<std::string> keys;
  for (const auto& in : inputs) {
    STRATA_CHECK(is_valid_lang_code(in.lang_a) && is_valid_lang_code(in.lang_b) && in.lang_a != in.lang_b)
        << "preprocess: bad language pair '" << in.lang_a << "-" << in.lang_b << "'";
    STRATA_CHECK(!in.split.empty() && in.split.find_first_of("./-") == std::string::npos)
        << "preprocess: bad split name '" << in.split << "'";
    STRATA_CHECK(keys.insert(in.split + "." + in.lang_a + "-" + in.lang_b).second &&
                 !keys.count(in.split + "." + in.lang_b + "-" + in.lang_a))
        << "preprocess: " << in.split << " of " << in.lang_a << "-" << in.lang_b << " is given twice";
    for (const auto& l : {in.lang_a, in.lang_b})
      STRATA_CHECK(vocab.contains(lang_token(l)))
          << "preprocess: " << opt.spm_model << " has no language token " << lang_token(l)
          << " (train the model on this language, or with --extra-langs " << l << ")";
  }

  // Read and validate everything first: a bad file fails before any output exists.
  std::vector<ParallelText> texts;
  for (const auto& in : inputs) texts.push_back(read_input(in));

  ::mkdir(opt.out_dir.c_str(), 0755);
  struct stat st;
  STRATA_CHECK(::stat(opt.out_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      << "preprocess: cannot create directory " << opt.out_dir;

  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  std::vector<PreprocessStats> stats;
  std::ofstream manifest(opt.out_dir + "/manifest.tsv.tmp");
  manifest << "split\tpair\tlang\tsentences\ttokens\tunk\tfile\n";
  for (size_t k = 0; k < inputs.size(); ++k) {
    const auto& in = inputs[k];
    PreprocessStats s{in.split, in.lang_a, in.lang_b, texts[k].size(), 0, 0, 0, 0};
    for (int side = 0; side < 2; ++side) {
      const std::string& lang = side == 0 ? in.lang_a : in.lang_b;
      Encoded e = encode_all(vocab, side == 0 ? texts[k].src : texts[k].tgt, threads);
      std::string path = dataset_prefix(opt.out_dir, in.split, in.lang_a, in.lang_b, lang) + kBinaryExt;
      write_binary_dataset(path, e.ids, dtype, vocab.size());
      (side == 0 ? s.tokens_a : s.tokens_b) = e.tokens;
      (side == 0 ? s.unk_a : s.unk_b) = e.unk;
      manifest << in.split << '\t' << in.lang_a << '-' << in.lang_b << '\t' << lang << '\t' << s.sentences << '\t'
               << e.tokens << '\t' << e.unk << '\t' << path.substr(opt.out_dir.size() + 1) << '\n';
    }
    stats.push_back(s);
  }
  manifest.close();
  STRATA_CHECK(manifest.good()) << "preprocess: cannot write " << opt.out_dir << "/manifest.tsv";
  STRATA_CHECK(std::rename((opt.out_dir + "/manifest.tsv.tmp").c_str(), (opt.out_dir + "/manifest.tsv").c_str()) == 0)
      << "preprocess: cannot write " << opt.out_dir << "/manifest.tsv";
  std::string model_copy = opt.out_dir + "/spm.model";
  if (!same_file(opt.spm_model, model_copy)) copy_file(opt.spm_model, model_copy);
  return stats;
}

}  // namespace strata::data
