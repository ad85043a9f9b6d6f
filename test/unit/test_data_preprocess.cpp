// [data] preprocess end to end: the fixture -> SentencePiece ids -> .sbin
// datasets that open_parallel serves in both directions.
#include <filesystem>
#include <fstream>

#include "strata/core/error.h"
#include "strata/data/binary_dataset.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/preprocess.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/text_input.h"
#include "test_data_util.h"

using namespace strata;
using namespace strata::data;
using Catch::Contains;

namespace {

std::vector<PreprocessInput> fixture_inputs() {
  std::vector<PreprocessInput> in;
  for (const auto& f : find_tsv_files(test::lohelp_fixture_dir()))
    in.push_back({f.split, f.lang_a, f.lang_b, f.path, "", ""});
  return in;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

size_t count_files(const std::string& dir, const std::string& ext) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) n += e.path().extension() == ext;
  return n;
}

}  // namespace

TEST_CASE("preprocess encodes the fixture into datasets for both directions", "[data]") {
  test::TempDir out;
  PreprocessOptions opt;
  opt.spm_model = test::fixture_spm_model();
  opt.out_dir = out.file("bin");
  opt.threads = 2;
  auto stats = preprocess(fixture_inputs(), opt);
  REQUIRE(stats.size() == 12);
  CHECK(count_files(opt.out_dir, ".sbin") == 24);
  CHECK(std::filesystem::exists(opt.out_dir + "/spm.model"));

  SentencePieceVocab vocab(opt.out_dir + "/spm.model");
  for (const auto& s : stats) {
    INFO(s.split << " " << s.lang_a << "-" << s.lang_b);
    ParallelDataset fwd = open_parallel(opt.out_dir, s.split, s.lang_a, s.lang_b);
    ParallelDataset back = open_parallel(opt.out_dir, s.split, s.lang_b, s.lang_a);
    REQUIRE(fwd.size() == s.sentences);
    CHECK(back.src->path() == fwd.tgt->path());  // one pair of files serves both directions
    CHECK(fwd.src->num_tokens() == s.tokens_a);
    CHECK(fwd.tgt->num_tokens() == s.tokens_b);
    auto* bin = dynamic_cast<BinaryDataset*>(fwd.src.get());
    REQUIRE(bin != nullptr);
    CHECK(bin->dtype() == TokenDType::U16);
    CHECK(bin->vocab_size() == vocab.size());
    if (s.split != "train") continue;
    // Stored: the sentence's pieces, then </s>; no language token.
    ParallelText text = read_tsv(test::lohelp_fixture_dir() + "/train." + s.lang_a + "-" + s.lang_b + ".tsv");
    for (size_t i = 0; i < fwd.size(); i += 37) {
      auto src = fwd.src->get(i), tgt = fwd.tgt->get(i);
      REQUIRE(src.back() == kEosId);
      REQUIRE(tgt.back() == kEosId);
      src.pop_back();
      tgt.pop_back();
      CHECK(src == vocab.encode(text.src[i]));
      CHECK(tgt == vocab.encode(text.tgt[i]));
      CHECK(vocab.decode(tgt) == vocab.decode(vocab.encode(text.tgt[i])));
    }
    CHECK(s.unk_a == 0);
    CHECK(s.unk_b == 0);
  }
  SECTION("the manifest lists every file with its counts") {
    auto lines = read_lines(opt.out_dir + "/manifest.tsv");
    REQUIRE(lines.size() == 25);
    CHECK(lines[0] == "split\tpair\tlang\tsentences\ttokens\tunk\tfile");
    CHECK(lines[1].rfind("dev\ten-de\ten\t50\t", 0) == 0);
    CHECK(lines[1].substr(lines[1].rfind('\t') + 1) == "dev.en-de.en.sbin");
  }
}

TEST_CASE("preprocess reads plain parallel files the same way as TSV", "[data]") {
  test::TempDir dir;
  ParallelText t = read_tsv(test::lohelp_fixture_dir() + "/dev.en-it.tsv");
  {
    std::ofstream en(dir.file("dev.en")), it(dir.file("dev.it"));
    for (size_t i = 0; i < t.size(); ++i) en << t.src[i] << '\n', it << t.tgt[i] << '\n';
  }
  PreprocessOptions opt;
  opt.spm_model = test::fixture_spm_model();
  opt.out_dir = dir.file("plain");
  opt.dtype = "i32";
  preprocess({{"dev", "en", "it", "", dir.file("dev.en"), dir.file("dev.it")}}, opt);
  opt.out_dir = dir.file("tsv");
  preprocess({{"dev", "en", "it", test::lohelp_fixture_dir() + "/dev.en-it.tsv", "", ""}}, opt);
  auto a = open_parallel(dir.file("plain"), "dev", "it", "en"), b = open_parallel(dir.file("tsv"), "dev", "it", "en");
  REQUIRE(a.size() == 50);
  CHECK(dynamic_cast<BinaryDataset&>(*a.src).dtype() == TokenDType::I32);
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a.src->get(i) == b.src->get(i));
    CHECK(a.tgt->get(i) == b.tgt->get(i));
  }
}

TEST_CASE("preprocess validates its input before writing anything", "[data]") {
  test::TempDir dir;
  PreprocessOptions opt;
  opt.spm_model = test::fixture_spm_model();
  opt.out_dir = dir.file("out");
  const std::string good = test::lohelp_fixture_dir() + "/dev.en-de.tsv";
  SECTION("a malformed TSV line") {
    test::write_file(dir.file("train.en-fr.tsv"), "Open a file\tOuvrir un fichier\nno tab on this line\n");
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "de", good, "", ""}, {"train", "en", "fr", dir.file("train.en-fr.tsv"), "", ""}}, opt),
                        Contains("train.en-fr.tsv:2: no tab"));
    CHECK_FALSE(std::filesystem::exists(opt.out_dir));
  }
  SECTION("plain files of different lengths") {
    test::write_file(dir.file("c.en"), "one\ntwo\nthree\n");
    test::write_file(dir.file("c.de"), "eins\nzwei\n");
    REQUIRE_THROWS_WITH(preprocess({{"train", "en", "de", "", dir.file("c.en"), dir.file("c.de")}}, opt),
                        Contains("c.en has 3 lines but") && Contains("c.de has 2"));
  }
  SECTION("invalid UTF-8") {
    test::write_file(dir.file("c.en"), "one\nt\xF0\x28wo\n");
    test::write_file(dir.file("c.de"), "eins\nzwei\n");
    REQUIRE_THROWS_WITH(preprocess({{"train", "en", "de", "", dir.file("c.en"), dir.file("c.de")}}, opt),
                        Contains("c.en:2: invalid UTF-8 at byte 2"));
  }
  SECTION("a language the model has no token for") {
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "ja", good, "", ""}}, opt), Contains("has no language token __ja__"));
  }
  SECTION("the same split and pair twice, in either order") {
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "de", good, "", ""}, {"dev", "de", "en", good, "", ""}}, opt),
                        Contains("dev of de-en is given twice"));
  }
  SECTION("bad names and options") {
    REQUIRE_THROWS_WITH(preprocess({{"dev.x", "en", "de", good, "", ""}}, opt), Contains("bad split name 'dev.x'"));
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "en", good, "", ""}}, opt), Contains("bad language pair 'en-en'"));
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "de", good, dir.file("a"), dir.file("b")}}, opt), Contains("not both"));
    opt.dtype = "u8";
    REQUIRE_THROWS_WITH(preprocess({{"dev", "en", "de", good, "", ""}}, opt), Contains("dtype must be auto, u16 or i32"));
  }
  CHECK_FALSE(std::filesystem::exists(opt.out_dir + "/manifest.tsv"));
}
