#include "strata/data/corpus_layout.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "strata/core/error.h"
#include "strata/data/binary_dataset.h"
#include "strata/data/fairseq_indexed_dataset.h"

namespace strata::data {

bool is_valid_lang_code(const std::string& lang) {
  if (lang.empty() || lang[0] == '_') return false;
  return std::all_of(lang.begin(), lang.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; });
}

std::optional<PairFile> parse_tsv_name(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string ext = ".tsv";
  if (name.size() <= ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0) return std::nullopt;
  name.resize(name.size() - ext.size());
  size_t dot = name.find('.');
  if (dot == std::string::npos || dot == 0) return std::nullopt;
  std::string split = name.substr(0, dot), pair = name.substr(dot + 1);
  size_t dash = pair.find('-');
  if (dash == std::string::npos || pair.find('-', dash + 1) != std::string::npos) return std::nullopt;
  PairFile f{path, split, pair.substr(0, dash), pair.substr(dash + 1)};
  if (!is_valid_lang_code(f.lang_a) || !is_valid_lang_code(f.lang_b) || f.lang_a == f.lang_b) return std::nullopt;
  return f;
}

std::vector<PairFile> find_tsv_files(const std::string& dir, const std::string& split) {
  DIR* d = ::opendir(dir.c_str());
  STRATA_CHECK(d != nullptr) << dir << ": cannot list directory: " << std::strerror(errno);
  std::vector<PairFile> out;
  while (dirent* e = ::readdir(d)) {
    auto f = parse_tsv_name(dir + "/" + e->d_name);
    if (f && (split.empty() || f->split == split)) out.push_back(*f);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const PairFile& a, const PairFile& b) { return a.path < b.path; });
  return out;
}

std::string dataset_prefix(const std::string& dir, const std::string& split, const std::string& a,
                           const std::string& b, const std::string& lang) {
  return dir + "/" + split + "." + a + "-" + b + "." + lang;
}

namespace {
bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  STRATA_CHECK(in.good()) << p << ": cannot open";
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

std::string fairseq_dict_path(const std::string& dir, const std::vector<std::string>& langs) {
  std::string shared = dir + "/dict.txt";
  if (exists(shared)) return shared;
  STRATA_CHECK(!langs.empty()) << "fairseq data-bin " << dir << ": no dict.txt, and no languages to look for dict.<lang>.txt";
  std::string first = dir + "/dict." + langs[0] + ".txt";
  STRATA_CHECK(exists(first)) << "fairseq data-bin " << dir << ": neither dict.txt nor dict." << langs[0] << ".txt";
  const std::string content = slurp(first);
  for (size_t i = 1; i < langs.size(); ++i) {
    std::string p = dir + "/dict." + langs[i] + ".txt";
    STRATA_CHECK(exists(p)) << "fairseq data-bin " << dir << ": dict." << langs[i] << ".txt is missing";
    STRATA_CHECK(slurp(p) == content) << "fairseq data-bin " << dir << ": dict." << langs[i] << ".txt differs from dict."
                                      << langs[0] << ".txt (Strata needs one shared vocabulary)";
  }
  return first;
}

ParallelDataset open_parallel(const std::string& dir, const std::string& split, const std::string& src,
                              const std::string& tgt) {
  ParallelDataset pd{split, src, tgt, nullptr, nullptr};
  std::string tried;
  for (const auto& [a, b] : {std::make_pair(src, tgt), std::make_pair(tgt, src)}) {
    std::string ps = dataset_prefix(dir, split, a, b, src), pt = dataset_prefix(dir, split, a, b, tgt);
    if (exists(ps + kBinaryExt) && exists(pt + kBinaryExt)) {
      pd.src = BinaryDataset::open(ps + kBinaryExt);
      pd.tgt = BinaryDataset::open(pt + kBinaryExt);
    } else if (fairseq_dataset_exists(ps) && fairseq_dataset_exists(pt)) {
      pd.src = FairseqIndexedDataset::open(ps);
      pd.tgt = FairseqIndexedDataset::open(pt);
    } else {
      tried += (tried.empty() ? "" : ", ") + ps + "{" + kBinaryExt + ",.idx/.bin}";
      continue;
    }
    STRATA_CHECK(pd.src->size() == pd.tgt->size())
        << "open_parallel: " << pd.src->path() << " has " << pd.src->size() << " sentences but " << pd.tgt->path()
        << " has " << pd.tgt->size();
    return pd;
  }
  STRATA_FAIL() << "open_parallel: no " << split << " data for " << src << "->" << tgt << " in " << dir
                << " (tried " << tried << " and the matching " << tgt << " side)";
  return pd;
}

}  // namespace strata::data
