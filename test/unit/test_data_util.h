// Helpers for the [data] tests: temporary directories, file bytes, the
// LibreOffice fixture and one small SentencePiece model trained on it (once per
// test run, shared by every test that needs it).
#pragma once
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "strata/data/corpus_layout.h"
#include "strata/data/spm_train.h"

namespace strata::test {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "strata_data_test.XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

// test/fixtures/lohelp, found from the repository root (where the tests run) or
// from $STRATA_FIXTURES.
inline std::string lohelp_fixture_dir() {
  if (const char* env = std::getenv("STRATA_FIXTURES")) return std::string(env) + "/lohelp";
  for (const char* cand : {"test/fixtures/lohelp", "../test/fixtures/lohelp", "../../test/fixtures/lohelp"})
    if (std::filesystem::exists(std::string(cand) + "/train.en-de.tsv")) return cand;
  FAIL("test/fixtures/lohelp not found: run the tests from the repository root or set STRATA_FIXTURES");
  return "";
}

constexpr int kFixtureVocab = 500;

// A unigram model of kFixtureVocab pieces trained on the fixture's train split
// (about 0.3 s); the directory lives until the test binary exits.
inline const std::string& fixture_spm_model() {
  static TempDir dir;
  static std::string model = [] {
    data::SpmTrainOptions opt;
    opt.vocab_size = kFixtureVocab;
    opt.threads = 2;
    auto by_lang = data::collect_sentences(data::find_tsv_files(lohelp_fixture_dir(), "train"));
    return data::train_spm(by_lang, dir.file("fixture"), opt).model_path;
  }();
  return model;
}

}  // namespace strata::test
