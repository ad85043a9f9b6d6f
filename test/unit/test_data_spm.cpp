// [data] SentencePiece: balanced sampling, training with fixed special ids and
// language tokens, encode/decode on the LibreOffice fixture.
#include <algorithm>
#include <cstdlib>
#include <set>

#include "strata/core/error.h"
#include "strata/data/spm_train.h"
#include "strata/data/spm_vocab.h"
#include "strata/data/text_input.h"
#include "test_data_util.h"

using namespace strata;
using namespace strata::data;
using Catch::Contains;

namespace {
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}
}  // namespace

TEST_CASE("balanced_sample keeps small languages whole and caps large ones", "[data]") {
  std::vector<std::string> s;
  for (int i = 0; i < 1000; ++i) s.push_back("sentence " + std::to_string(i));
  CHECK(balanced_sample(s, 0, 1) == s);
  CHECK(balanced_sample(s, 1000, 1) == s);
  auto a = balanced_sample(s, 100, 7);
  REQUIRE(a.size() == 100);
  // A subset, without repeats, in the original order.
  std::vector<size_t> pos;
  for (const auto& x : a) pos.push_back(size_t(std::find(s.begin(), s.end(), x) - s.begin()));
  CHECK(std::is_sorted(pos.begin(), pos.end()));
  CHECK(std::adjacent_find(pos.begin(), pos.end()) == pos.end());
  CHECK(pos.back() < s.size());
  CHECK(balanced_sample(s, 100, 7) == a);  // deterministic
  CHECK(balanced_sample(s, 100, 8) != a);  // and seeded
  // Roughly uniform: the sample is not bunched at one end.
  CHECK(pos[50] > 200);
  CHECK(pos[50] < 800);
}

TEST_CASE("collect_sentences gathers distinct sentences per language", "[data]") {
  auto by_lang = collect_sentences(find_tsv_files(test::lohelp_fixture_dir(), "train"));
  REQUIRE(by_lang.size() == 5);
  // The fixture is multi-way parallel: the same 300 English sentences in all four files.
  CHECK(by_lang["en"].size() == 300);
  for (const char* l : {"de", "fr", "it", "nl"}) {
    INFO(l);
    CHECK(by_lang[l].size() > 280);
    CHECK(by_lang[l].size() <= 300);
    std::set<std::string> uniq(by_lang[l].begin(), by_lang[l].end());
    CHECK(uniq.size() == by_lang[l].size());
  }
}

TEST_CASE("train_spm gives fairseq's special ids and one token per language", "[data]") {
  SentencePieceVocab v(test::fixture_spm_model());
  CHECK(v.size() == test::kFixtureVocab);
  CHECK(v.symbol(0) == "<s>");
  CHECK(v.symbol(1) == "<pad>");
  CHECK(v.symbol(2) == "</s>");
  CHECK(v.symbol(3) == "<unk>");
  // Language tokens follow the specials in sorted order.
  const std::vector<std::string> langs = {"de", "en", "fr", "it", "nl"};
  for (size_t i = 0; i < langs.size(); ++i) CHECK(v.lang_id(langs[i]) == int32_t(4 + i));
  CHECK(v.languages() == langs);
  REQUIRE_THROWS_WITH(v.lang_id("ja"), Contains("no language token __ja__"));
  CHECK(v.id("▁certainly-not-a-piece") == v.unk());
  CHECK_FALSE(v.contains("▁certainly-not-a-piece"));
  CHECK(v.contains("<unk>"));
  REQUIRE_THROWS_WITH(v.symbol(test::kFixtureVocab), Contains("out of range"));
}

TEST_CASE("SentencePiece round-trips the fixture's training text", "[data]") {
  SentencePieceVocab v(test::fixture_spm_model());
  size_t sentences = 0, tokens = 0;
  for (const auto& f : find_tsv_files(test::lohelp_fixture_dir(), "train")) {
    ParallelText t = read_tsv(f.path);
    for (const auto* side : {&t.src, &t.tgt})
      for (const auto& s : *side) {
        auto ids = v.encode(s);
        REQUIRE(!ids.empty());
        for (int32_t id : ids) REQUIRE((id >= 4 + 5 && id < v.size()));  // no specials, no language tokens, no <unk>
        // NFKC normalisation (nmt_nfkc) turns the ellipsis into three dots; nothing else changes.
        REQUIRE(v.decode(ids) == replace_all(s, "…", "..."));
        ++sentences;
        tokens += ids.size();
      }
  }
  CHECK(sentences == 2400);
  // A 500-piece model splits into short pieces, but not into characters.
  CHECK(tokens > 2400 * 10);
  CHECK(tokens < 2400 * 60);
}

TEST_CASE("language tokens are single pieces and decode drops them", "[data]") {
  SentencePieceVocab v(test::fixture_spm_model());
  // In raw text a language token stays one piece (after SentencePiece's "▁" word prefix);
  // the pipeline never puts it there, the batcher adds its id.
  auto ids = v.encode("__de__ Wählen Sie Datei");
  REQUIRE(ids.size() > 2);
  CHECK(v.symbol(ids[0]) == "▁");
  CHECK(ids[1] == v.lang_id("de"));
  CHECK(v.decode(ids) == "Wählen Sie Datei");
  std::vector<int32_t> with_specials = {v.bos(), v.lang_id("fr")};
  auto body = v.encode("Ouvrir le fichier");
  with_specials.insert(with_specials.end(), body.begin(), body.end());
  with_specials.push_back(v.eos());
  with_specials.push_back(v.pad());
  CHECK(v.decode(with_specials) == "Ouvrir le fichier");
  auto pieces = v.encode_pieces("x__nl__y");
  REQUIRE(pieces.size() >= 3);
  CHECK(pieces[pieces.size() - 2] == "__nl__");
  CHECK(pieces.back() == "y");
  REQUIRE_THROWS_WITH(v.decode({5, -1}), Contains("id -1 out of range"));
}

TEST_CASE("train_spm samples each language up to the cap", "[data]") {
  test::TempDir dir;
  auto by_lang = collect_sentences(find_tsv_files(test::lohelp_fixture_dir(), "train"));
  SpmTrainOptions opt;
  opt.vocab_size = 300;
  opt.max_lines_per_lang = 120;
  opt.extra_langs = {"zz"};
  opt.threads = 2;
  SpmTrainReport rep = train_spm(by_lang, dir.file("m"), opt);
  for (const auto& [lang, n] : rep.sampled) CHECK(n == 120);
  CHECK(rep.available.at("en") == 300);
  CHECK(rep.lang_tokens == std::vector<std::string>{"__de__", "__en__", "__fr__", "__it__", "__nl__", "__zz__"});
  SentencePieceVocab v(rep.model_path);
  CHECK(v.size() == 300);
  CHECK(v.lang_id("zz") == 9);
  CHECK(test::read_bytes(rep.vocab_path).size() > 0);
  // The sample and the log are cleaned up.
  CHECK_FALSE(std::filesystem::exists(dir.file("m.sample.txt")));
}

TEST_CASE("train_spm reports bad options and trainer failures", "[data]") {
  test::TempDir dir;
  std::map<std::string, std::vector<std::string>> tiny = {{"en", {"a b c", "d e f"}}, {"de", {"x y z"}}};
  SpmTrainOptions opt;
  opt.vocab_size = 4;
  REQUIRE_THROWS_WITH(train_spm(tiny, dir.file("m"), opt), Contains("vocab_size 4 is too small"));
  opt.vocab_size = 100;
  opt.model_type = "word";
  REQUIRE_THROWS_WITH(train_spm(tiny, dir.file("m"), opt), Contains("model_type must be unigram or bpe"));
  opt.model_type = "unigram";
  REQUIRE_THROWS_WITH(train_spm({{"e-n", {"a"}}}, dir.file("m"), opt), Contains("bad language code 'e-n'"));
  opt.spm_train = dir.file("no_such_program");
  REQUIRE_THROWS_WITH(train_spm(tiny, dir.file("m"), opt), Contains("cannot run") && Contains("no_such_program"));
  // Too few characters for 100 pieces with a hard limit: spm_train's own message comes through.
  opt.spm_train = "spm_train";
  REQUIRE_THROWS_WITH(train_spm(tiny, dir.file("m"), opt), Contains("spm_train exited with") && Contains("Vocabulary size"));
  opt.soft_vocab_limit = true;
  CHECK_NOTHROW(train_spm(tiny, dir.file("m"), opt));
}

TEST_CASE("SentencePieceVocab refuses models with other special ids", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("t.txt"), "one two three four five six seven eight nine ten\nabc def ghi\n");
  // SentencePiece's defaults: <unk>=0 <s>=1 </s>=2, no <pad>.
  std::string cmd = "spm_train --input=" + dir.file("t.txt") + " --model_prefix=" + dir.file("d") +
                    " --vocab_size=40 --hard_vocab_limit=false --minloglevel=2 >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  REQUIRE_THROWS_WITH(SentencePieceVocab(dir.file("d.model")),
                      Contains("has special ids bos=1 pad=-1 eos=2 unk=0") && Contains("<s>=0 <pad>=1 </s>=2 <unk>=3"));
  REQUIRE_THROWS_WITH(SentencePieceVocab(dir.file("none.model")), Contains("cannot load") && Contains("none.model"));
}
