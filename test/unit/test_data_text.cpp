// [data] text input: UTF-8 validation, TSV and plain parallel files, file names.
#include <random>

#include "strata/core/error.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/text_input.h"
#include "strata/data/vocabulary.h"
#include "test_data_util.h"

using namespace strata;
using namespace strata::data;
using Catch::Contains;

namespace {

// Reference: the well-formed byte sequences of Unicode's Table 3-7, range by range.
bool table37_valid(const std::vector<uint8_t>& b, size_t* bad) {
  auto in = [](uint8_t x, int lo, int hi) { return x >= lo && x <= hi; };
  size_t i = 0;
  while (i < b.size()) {
    uint8_t c = b[i];
    size_t n = b.size() - i;
    auto at = [&](size_t k) -> int { return k < n ? b[i + k] : -1; };
    auto cont = [&](size_t k) { return at(k) >= 0x80 && at(k) <= 0xBF; };
    size_t len = 0;
    if (c <= 0x7F) len = 1;
    else if (in(c, 0xC2, 0xDF) && cont(1)) len = 2;
    else if (c == 0xE0 && at(1) >= 0xA0 && at(1) <= 0xBF && cont(2)) len = 3;
    else if ((in(c, 0xE1, 0xEC) || in(c, 0xEE, 0xEF)) && cont(1) && cont(2)) len = 3;
    else if (c == 0xED && at(1) >= 0x80 && at(1) <= 0x9F && cont(2)) len = 3;
    else if (c == 0xF0 && at(1) >= 0x90 && at(1) <= 0xBF && cont(2) && cont(3)) len = 4;
    else if (in(c, 0xF1, 0xF3) && cont(1) && cont(2) && cont(3)) len = 4;
    else if (c == 0xF4 && at(1) >= 0x80 && at(1) <= 0x8F && cont(2) && cont(3)) len = 4;
    if (len == 0) {
      *bad = i;
      return false;
    }
    i += len;
  }
  return true;
}

void require_same_verdict(const std::vector<uint8_t>& b) {
  size_t bad_ref = 0, bad = 0;
  bool ref = table37_valid(b, &bad_ref);
  bool got = is_valid_utf8(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), &bad);
  if (got != ref || (!ref && bad != bad_ref)) {
    std::string hex;
    for (uint8_t x : b) hex += Catch::StringMaker<int>::convert(x) + " ";
    INFO("bytes " << hex << " ref " << ref << "@" << bad_ref << " got " << got << "@" << bad);
    REQUIRE(got == ref);
    REQUIRE(bad == bad_ref);
  }
}

}  // namespace

TEST_CASE("is_valid_utf8 accepts text in many scripts", "[data]") {
  for (const char* s : {"", "plain ASCII", "Wählen Sie Einfügen – Fangpunkt…", "Français: ç, œ, «»",
                        "中国 ライト", "كتب", "емоджи 😀 𝄞", "\x7f"})
    CHECK(is_valid_utf8(s));
}

TEST_CASE("is_valid_utf8 rejects malformed sequences at the right offset", "[data]") {
  struct Case {
    std::string bytes;
    size_t offset;
  };
  for (const Case& c : std::vector<Case>{{"ab\x80", 2},              // lone continuation byte
                                         {"abc\xC3", 3},             // truncated 2-byte sequence
                                         {"\xC0\xAF", 0},            // overlong '/'
                                         {"x\xE0\x80\xAF", 1},       // overlong 3-byte
                                         {"\xED\xA0\x80", 0},        // UTF-16 surrogate
                                         {"ok\xF4\x90\x80\x80", 2},  // above U+10FFFF
                                         {"\xFF", 0},
                                         {"\xE2\x82", 0},  // truncated 3-byte at the end
                                         {"\xF0\x9F\x98", 0}}) {
    size_t bad = 999;
    INFO("case at offset " << c.offset);
    CHECK_FALSE(is_valid_utf8(c.bytes, &bad));
    CHECK(bad == c.offset);
  }
}

TEST_CASE("is_valid_utf8 agrees with Unicode's table of well-formed sequences", "[data]") {
  SECTION("every 1- and 2-byte string") {
    for (int a = 0; a < 256; ++a) {
      require_same_verdict({uint8_t(a)});
      for (int b = 0; b < 256; ++b) require_same_verdict({uint8_t(a), uint8_t(b)});
    }
  }
  SECTION("every 3-byte string with a multi-byte lead") {
    for (int a = 0xC0; a < 256; ++a)
      for (int b = 0; b < 256; ++b)
        for (int c = 0; c < 256; c += (c >= 0x70 && c <= 0xC8) ? 1 : 7) require_same_verdict({uint8_t(a), uint8_t(b), uint8_t(c)});
  }
  SECTION("4-byte leads at the range boundaries") {
    const int edges[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    for (int a = 0xF0; a < 256; ++a)
      for (int b : edges)
        for (int c : edges)
          for (int d : edges) require_same_verdict({uint8_t(a), uint8_t(b), uint8_t(c), uint8_t(d)});
  }
  SECTION("random strings from a byte alphabet rich in boundaries") {
    auto seed = GENERATE(1u, 2u, 3u);
    std::mt19937 rng(seed);
    const uint8_t alphabet[] = {'a', 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2,
                                0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF3, 0xF4, 0xF5, 0xFF};
    for (int n = 0; n < 20000; ++n) {
      std::vector<uint8_t> b(1 + rng() % 9);
      for (auto& x : b) x = alphabet[rng() % sizeof alphabet];
      require_same_verdict(b);
    }
  }
}

TEST_CASE("read_tsv splits each line at its tab", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("train.en-de.tsv");
  test::write_file(p, "Hello world\tHallo Welt\nOpen the file.\tÖffnen Sie die Datei.\r\nlast one\tletzte\n");
  ParallelText t = read_tsv(p);
  REQUIRE(t.size() == 3);
  CHECK(t.src[0] == "Hello world");
  CHECK(t.tgt[0] == "Hallo Welt");
  CHECK(t.tgt[1] == "Öffnen Sie die Datei.");  // "\r\n" endings are accepted
  CHECK(t.src[2] == "last one");
  SECTION("a byte-order mark at the start is dropped") {
    test::write_file(p, "\xEF\xBB\xBFHello\tHallo\n");
    CHECK(read_tsv(p).src == std::vector<std::string>{"Hello"});
  }
  SECTION("a missing final newline keeps the last line") {
    test::write_file(p, "a b c\tx y z");
    CHECK(read_tsv(p).tgt == std::vector<std::string>{"x y z"});
  }
}

TEST_CASE("read_tsv reports the file and line of malformed input", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("bad.tsv");
  const std::string good = "one two\teins zwei\nthree\tdrei\n";
  struct Case {
    std::string line, message;
  };
  for (const Case& c : std::vector<Case>{{"no tab here", "bad.tsv:3: no tab"},
                                         {"a\tb\tc", "bad.tsv:3: more than one tab"},
                                         {"", "bad.tsv:3: empty line"},
                                         {"   ", "bad.tsv:3: empty line"},
                                         {"\tnur Ziel", "bad.tsv:3: empty source field"},
                                         {"only source\t ", "bad.tsv:3: empty target field"},
                                         {"caf\xE9\tCaf\xC3\xA9", "bad.tsv:3: invalid UTF-8 at byte 4"}}) {
    test::write_file(p, good + c.line + "\nfour\tvier\n");
    INFO(c.message);
    REQUIRE_THROWS_WITH(read_tsv(p), Contains(c.message));
  }
  SECTION("a missing file is named") { REQUIRE_THROWS_WITH(read_tsv(dir.file("nope.tsv")), Contains("nope.tsv: cannot open")); }
}

TEST_CASE("read_parallel pairs two line-aligned files", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("c.en"), "Hello\nGood morning\n");
  test::write_file(dir.file("c.fr"), "Bonjour\nBonjour (matin)\n");
  ParallelText t = read_parallel(dir.file("c.en"), dir.file("c.fr"));
  REQUIRE(t.size() == 2);
  CHECK(t.src[1] == "Good morning");
  CHECK(t.tgt[1] == "Bonjour (matin)");
}

TEST_CASE("read_parallel rejects files with different line counts", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("c.en"), "a\nb\nc\n");
  test::write_file(dir.file("c.fr"), "a\nb\n");
  REQUIRE_THROWS_WITH(read_parallel(dir.file("c.en"), dir.file("c.fr")),
                      Contains("c.en has 3 lines but") && Contains("c.fr has 2"));
}

TEST_CASE("read_text_lines reports empty lines and bad UTF-8 with their line number", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("x.de"), "eins\nzwei\n\nvier\n");
  REQUIRE_THROWS_WITH(read_text_lines(dir.file("x.de")), Contains("x.de:3: empty line"));
  test::write_file(dir.file("y.de"), "eins\n\xC3\x28\n");
  REQUIRE_THROWS_WITH(read_text_lines(dir.file("y.de")), Contains("y.de:2: invalid UTF-8 at byte 1"));
}

TEST_CASE("the LibreOffice fixture reads cleanly with the documented sizes", "[data]") {
  std::string dir = test::lohelp_fixture_dir();
  auto files = find_tsv_files(dir);
  REQUIRE(files.size() == 12);
  std::vector<std::string> english_train;
  for (const auto& f : files) {
    INFO(f.path);
    ParallelText t = read_tsv(f.path);
    size_t want = f.split == "train" ? 300 : 50;
    CHECK(t.size() == want);
    CHECK(f.lang_a == "en");
    for (size_t i = 0; i < t.size(); ++i) {
      CHECK(t.src[i] != t.tgt[i]);       // untranslated pairs were dropped
      CHECK(t.src[i].find(' ') != std::string::npos);
    }
    // Multi-way parallel: every language translates the same English sentences.
    if (f.split == "train") {
      if (english_train.empty()) english_train = t.src;
      CHECK(t.src == english_train);
    }
  }
}

TEST_CASE("parse_tsv_name reads <split>.<a>-<b>.tsv and rejects other names", "[data]") {
  auto f = parse_tsv_name("/x/y/train.en-pt_br.tsv");
  REQUIRE(f.has_value());
  CHECK(f->split == "train");
  CHECK(f->lang_a == "en");
  CHECK(f->lang_b == "pt_br");
  CHECK(f->path == "/x/y/train.en-pt_br.tsv");
  CHECK(parse_tsv_name("valid.eng_Latn-deu_Latn.tsv").has_value());
  for (const char* bad : {"train.en-de.txt", "train.en.tsv", "train.en-pt-br.tsv", "en-de.tsv", ".en-de.tsv",
                          "train.en-en.tsv", "train.e n-de.tsv", "train.-de.tsv"})
    CHECK_FALSE(parse_tsv_name(bad).has_value());
}

TEST_CASE("find_tsv_files lists pair files sorted and filters by split", "[data]") {
  std::string dir = test::lohelp_fixture_dir();
  auto all = find_tsv_files(dir);
  REQUIRE(all.size() == 12);
  CHECK(all.front().split == "dev");
  CHECK(all.front().lang_b == "de");
  auto train = find_tsv_files(dir, "train");
  REQUIRE(train.size() == 4);
  for (const auto& f : train) CHECK(f.split == "train");
  CHECK(find_tsv_files(dir, "valid").empty());
  REQUIRE_THROWS_WITH(find_tsv_files(dir + "/missing"), Contains("cannot list directory"));
}

TEST_CASE("language tokens wrap and unwrap language codes", "[data]") {
  CHECK(lang_token("de") == "__de__");
  CHECK(lang_of_token("__pt_br__") == "pt_br");
  CHECK(lang_of_token(lang_token("eng_Latn")) == "eng_Latn");
  for (const char* s : {"de", "__", "____", "__de", "de__", "▁__de__", "__a b__"}) CHECK(lang_of_token(s).empty());
  CHECK(is_valid_lang_code("zh_cn"));
  CHECK_FALSE(is_valid_lang_code("zh-cn"));
  CHECK_FALSE(is_valid_lang_code("_x"));
  CHECK_FALSE(is_valid_lang_code(""));
}
