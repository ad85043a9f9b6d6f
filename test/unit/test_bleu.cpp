// BLEU, its tokenizers, the Unicode helpers and the strata-bleu command line.
// Expected numbers are worked by hand from sacreBLEU 2.x's definitions; the
// working is in the comments next to each case.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "strata/core/error.h"
#include "strata/eval/bleu.h"
#include "strata/eval/cli.h"
#include "strata/eval/tokenizers.h"
#include "strata/eval/unicode.h"

using namespace strata::eval;
using Catch::Contains;
using Streams = std::vector<std::vector<std::string>>;

namespace {

BleuScore bleu1(const std::string& hyp, const std::string& ref, BleuOptions o = {}) {
  return Bleu(o).corpus_score({hyp}, {{ref}});
}

// A fresh directory under /tmp for the files a test reads; removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/strata_bleu_test_XXXXXX";
    char* d = mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    path = d;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream f(path, std::ios::binary);
  f << text;
  REQUIRE(f.good());
  return path;
}

struct CliResult {
  int rc;
  std::string out, err;
};

CliResult run_bleu(std::vector<std::string> args, const std::string& stdin_text = "") {
  args.insert(args.begin(), "strata-bleu");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::istringstream in(stdin_text);
  std::ostringstream out, err;
  int rc = bleu_main(static_cast<int>(argv.size()), argv.data(), in, out, err);
  return {rc, out.str(), err.str()};
}

}  // namespace

// ---------------------------------------------------------------- scores

TEST_CASE("a hypothesis identical to its reference scores 100", "[bleu]") {
  // "the cat sat on the mat": 6 unigrams, 5 bigrams, 4 trigrams, 3 4-grams,
  // all matched ('the' twice on both sides, so clipping keeps 2).
  auto s = bleu1("the cat sat on the mat", "the cat sat on the mat");
  CHECK(s.score == Approx(100.0).epsilon(1e-14));
  CHECK(s.counts == std::vector<int64_t>{6, 5, 4, 3});
  CHECK(s.totals == std::vector<int64_t>{6, 5, 4, 3});
  for (double p : s.precisions) CHECK(p == Approx(100.0));
  CHECK(s.bp == 1.0);
  CHECK(s.sys_len == 6);
  CHECK(s.ref_len == 6);
  CHECK(s.ratio == 1.0);
  CHECK(s.format(1, true) == "100.0");
}

TEST_CASE("an empty hypothesis scores 0 with a zero brevity penalty", "[bleu]") {
  // c = 0 < r = 2: BP = 0 by definition; no n-gram matches at all returns 0
  // before smoothing (sacreBLEU #141).
  auto s = bleu1("", "the cat");
  CHECK(s.score == 0.0);
  CHECK(s.bp == 0.0);
  CHECK(s.sys_len == 0);
  CHECK(s.ref_len == 2);
  CHECK(s.ratio == 0.0);
  CHECK(s.verbose == "0.0/0.0/0.0/0.0 (BP = 0.000 ratio = 0.000 hyp_len = 0 ref_len = 2)");
  // Whitespace-only hypotheses are empty after rstrip and split.
  CHECK(bleu1("   \t", "the cat").score == 0.0);
}

TEST_CASE("exp smoothing halves the pseudo-count of each zero-match order", "[bleu]") {
  // hyp "the quick brown dog fox jumps over" (7) vs ref "the quick brown fox jumps over" (6)
  //   1-grams: 6/7 (dog misses)
  //   2-grams: the-quick quick-brown fox-jumps jumps-over = 4/6
  //   3-grams: the-quick-brown fox-jumps-over = 2/5
  //   4-grams: 0/4 -> exp: smooth = 2, p4 = 100 / (2 * 4) = 12.5
  // BP = 1 (7 >= 6); BLEU = (600/7 * 400/6 * 40 * 12.5)^(1/4) = 41.1134...
  auto s = bleu1("the quick brown dog fox jumps over", "the quick brown fox jumps over");
  CHECK(s.counts == std::vector<int64_t>{6, 4, 2, 0});
  CHECK(s.totals == std::vector<int64_t>{7, 6, 5, 4});
  CHECK(s.precisions[0] == Approx(600.0 / 7));
  CHECK(s.precisions[1] == Approx(400.0 / 6));
  CHECK(s.precisions[2] == Approx(40.0));
  CHECK(s.precisions[3] == Approx(12.5));
  CHECK(s.bp == 1.0);
  CHECK(s.score == Approx(std::pow(600.0 / 7 * 400.0 / 6 * 40 * 12.5, 0.25)).epsilon(1e-12));
  CHECK(s.score == Approx(41.113361690052).epsilon(1e-12));
  CHECK(s.format(2, true) == "41.11");
}

TEST_CASE("exp smoothing compounds over consecutive zero-match orders", "[bleu]") {
  // hyp "a b x c d y e" (7) vs ref "a b c d e" (5)
  //   1-grams 5/7; 2-grams a-b c-d = 2/6
  //   3-grams 0/5 -> smooth 2: p3 = 100 / (2 * 5) = 10
  //   4-grams 0/4 -> smooth 4: p4 = 100 / (4 * 4) = 6.25
  // BLEU = (500/7 * 100/3 * 10 * 6.25)^(1/4) = 19.6407...
  auto s = bleu1("a b x c d y e", "a b c d e");
  CHECK(s.counts == std::vector<int64_t>{5, 2, 0, 0});
  CHECK(s.precisions[2] == Approx(10.0));
  CHECK(s.precisions[3] == Approx(6.25));
  CHECK(s.score == Approx(std::pow(500.0 / 7 * 100.0 / 3 * 10 * 6.25, 0.25)).epsilon(1e-12));
}

TEST_CASE("the floor, add-k and none smoothing methods follow Chen and Cherry", "[bleu]") {
  const std::string hyp = "the quick brown dog fox jumps over", ref = "the quick brown fox jumps over";
  BleuOptions o;
  SECTION("floor: zero-match precision is 100 * 0.1 / total") {
    o.smooth_method = SmoothMethod::Floor;  // p4 = 100 * 0.1 / 4 = 2.5
    auto s = bleu1(hyp, ref, o);
    CHECK(s.precisions[3] == Approx(2.5));
    CHECK(s.score == Approx(std::pow(600.0 / 7 * 400.0 / 6 * 40 * 2.5, 0.25)).epsilon(1e-12));
    CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:floor[0.10]|version:2.4.3");
    o.smooth_value = 0.5;  // p4 = 100 * 0.5 / 4 = 12.5
    CHECK(bleu1(hyp, ref, o).precisions[3] == Approx(12.5));
    CHECK(bleu1(hyp, ref, o).signature.format() ==
          "nrefs:1|case:mixed|eff:no|tok:13a|smooth:floor[0.50]|version:2.4.3");
  }
  SECTION("add-k: k is added to matches and totals of orders 2 and up") {
    o.smooth_method = SmoothMethod::AddK;  // (4+1)/(6+1), (2+1)/(5+1), (0+1)/(4+1); unigrams untouched
    auto s = bleu1(hyp, ref, o);
    CHECK(s.precisions[0] == Approx(600.0 / 7));
    CHECK(s.precisions[1] == Approx(500.0 / 7));
    CHECK(s.precisions[2] == Approx(50.0));
    CHECK(s.precisions[3] == Approx(20.0));
    CHECK(s.score == Approx(std::pow(600.0 / 7 * 500.0 / 7 * 50 * 20, 0.25)).epsilon(1e-12));
    CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:add-k[1.00]|version:2.4.3");
  }
  SECTION("none: a zero precision makes the geometric mean 0") {
    o.smooth_method = SmoothMethod::None;
    auto s = bleu1(hyp, ref, o);
    CHECK(s.precisions[3] == 0.0);
    CHECK(s.score == 0.0);
    CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:none|version:2.4.3");
  }
  SECTION("names parse and print back") {
    for (auto name : {"none", "floor", "add-k", "exp"}) CHECK(smooth_method_name(parse_smooth_method(name)) == name);
    CHECK_THROWS_WITH(parse_smooth_method("laplace"), Contains("unknown smoothing method 'laplace'"));
    CHECK(default_smooth_value(SmoothMethod::Floor) == 0.1);
    CHECK(default_smooth_value(SmoothMethod::AddK) == 1.0);
    CHECK_FALSE(default_smooth_value(SmoothMethod::Exp).has_value());
  }
}

TEST_CASE("a short hypothesis pays the brevity penalty exp(1 - r/c)", "[bleu]") {
  // hyp "the cat sat on" (c = 4) is a prefix of the 6-token reference: every
  // precision is 100, BP = exp(1 - 6/4) = exp(-0.5) = 0.60653.
  auto s = bleu1("the cat sat on", "the cat sat on the mat");
  CHECK(s.bp == Approx(std::exp(-0.5)));
  CHECK(s.score == Approx(100 * std::exp(-0.5)).epsilon(1e-12));
  CHECK(s.ratio == Approx(4.0 / 6));
  CHECK(s.verbose == "100.0/100.0/100.0/100.0 (BP = 0.607 ratio = 0.667 hyp_len = 4 ref_len = 6)");
  // A longer hypothesis is not penalised: BP stays 1.
  CHECK(bleu1("the cat sat on the mat today", "the cat sat on the mat").bp == 1.0);
}

TEST_CASE("several references clip by the maximum count and use the closest length", "[bleu]") {
  // Papineni's example: 7 x "the" against
  //   ref1 "the cat is on the mat"     (6 tokens, 'the' twice)
  //   ref2 "there is a cat on the mat" (7 tokens, 'the' once)
  // unigram matches clip to max(2, 1) = 2 -> 2/7; no bigram "the the" in
  // either -> 0/6, 0/5, 0/4 with exp smoothing 100/12, 100/20, 100/32.
  // Closest reference length to 7 is 7 -> BP 1.
  auto s = Bleu().corpus_score({"the the the the the the the"},
                               {{"the cat is on the mat"}, {"there is a cat on the mat"}});
  CHECK(s.counts == std::vector<int64_t>{2, 0, 0, 0});
  CHECK(s.ref_len == 7);
  CHECK(s.bp == 1.0);
  CHECK(s.precisions[0] == Approx(200.0 / 7));
  CHECK(s.precisions[1] == Approx(100.0 / 12));
  CHECK(s.precisions[2] == Approx(5.0));
  CHECK(s.precisions[3] == Approx(3.125));
  CHECK(s.score == Approx(std::pow(200.0 / 7 * 100.0 / 12 * 5 * 3.125, 0.25)).epsilon(1e-12));
  CHECK(s.signature.format() == "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3");

  SECTION("a tie in distance picks the shorter reference, in either order") {
    // hyp length 5; references of length 4 and 6 are both 1 away -> 4.
    auto a = Bleu().corpus_score({"a b c d e"}, {{"a b c d"}, {"a b c d e f"}});
    auto b = Bleu().corpus_score({"a b c d e"}, {{"a b c d e f"}, {"a b c d"}});
    CHECK(a.ref_len == 4);
    CHECK(b.ref_len == 4);
    CHECK(a.ratio == Approx(1.25));
    CHECK(a.score == Approx(b.score));
    // All of "a b c d e" occurs in the second reference: 100 with BP 1.
    CHECK(a.score == Approx(100.0));
  }
  SECTION("matches in different references combine per n-gram") {
    // "x y" found only in ref2, "a b" only in ref1: both bigrams match.
    auto s2 = Bleu().corpus_score({"a b x y"}, {{"a b c d"}, {"w x y z"}});
    CHECK(s2.counts[0] == 4);
    CHECK(s2.counts[1] == 2);  // a-b and x-y; b-x matches nowhere
    CHECK(s2.totals[1] == 3);
  }
}

TEST_CASE("corpus BLEU sums statistics over segments instead of averaging scores", "[bleu]") {
  // seg1 "a b c d" = ref: 4/4, 3/3, 2/2, 1/1; seg2 "x" vs "y": 0/1.
  // Corpus: 4/5, 3/3, 2/2, 1/1; lengths 5 vs 5 -> BP 1.
  // BLEU = (80 * 100 * 100 * 100)^(1/4) = 100 * 0.8^(1/4) = 94.574
  auto s = Bleu().corpus_score({"a b c d", "x"}, {{"a b c d", "y"}});
  CHECK(s.counts == std::vector<int64_t>{4, 3, 2, 1});
  CHECK(s.totals == std::vector<int64_t>{5, 3, 2, 1});
  CHECK(s.score == Approx(100 * std::pow(0.8, 0.25)).epsilon(1e-12));
  CHECK(s.format(2, true) == "94.57");

  SECTION("segment statistics add up to the corpus statistics") {
    Bleu bleu;
    std::string nrefs;
    auto segs = bleu.segment_stats({"a b c d", "x"}, {{"a b c d", "y"}}, &nrefs);
    REQUIRE(segs.size() == 2);
    CHECK(segs[0].correct == std::vector<int64_t>{4, 3, 2, 1});
    CHECK(segs[1].total == std::vector<int64_t>{1, 0, 0, 0});
    CHECK(nrefs == "1");
    BleuStats sum;
    sum += segs[0];
    sum += segs[1];
    CHECK(sum.sys_len == 5);
    CHECK(sum.ref_len == 5);
    CHECK(bleu.score_from_stats(sum).score == Approx(s.score));
    BleuStats wrong;
    wrong.correct = {1, 2};
    wrong.total = {1, 2};
    CHECK_THROWS_WITH(sum += wrong, Contains("n-gram order 2"));
  }
}

TEST_CASE("effective order averages only over orders the hypothesis has", "[bleu]") {
  // "a b" has 1- and 2-grams only: without effective order the missing
  // 3-gram precision is 0, log-floored, and the score collapses to 0; with
  // it, BLEU = (100 * 100)^(1/2) = 100.
  auto plain = bleu1("a b", "a b");
  CHECK(plain.score == Approx(0.0).margin(1e-300));
  BleuOptions eff;
  eff.effective_order = true;
  auto s = bleu1("a b", "a b", eff);
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.4.3");
  auto sent = Bleu(eff).sentence_score("a b", {"a b"});
  CHECK(sent.score == Approx(100.0));
}

TEST_CASE("lowercasing makes BLEU case-insensitive and marks the signature", "[bleu]") {
  BleuOptions lc;
  lc.lowercase = true;
  CHECK(bleu1("The Cat Sat On", "the cat sat on").score == 0.0);
  auto s = bleu1("The Cat Sat On", "the cat sat on", lc);
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format() == "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.4.3");
  CHECK(s.signature.format(true) == "#:1|c:lc|e:no|tok:13a|s:exp|v:2.4.3");
  // Unicode lowercasing: "ΟΔΟΣ" lowercases with a final sigma (U+03C2), so a
  // reference spelled with the medial sigma (U+03C3) does not match it.
  const std::string hyp = "\u039f\u0394\u039f\u03a3 \u039a\u0391\u0399";  // ΟΔΟΣ ΚΑΙ
  CHECK(bleu1(hyp, "\u03bf\u03b4\u03bf\u03c2 \u03ba\u03b1\u03b9", lc).counts[0] == 2);
  CHECK(bleu1(hyp, "\u03bf\u03b4\u03bf\u03c3 \u03ba\u03b1\u03b9", lc).counts[0] == 1);
  CHECK(bleu1(hyp, "\u03bf\u03b4\u03bf\u03c2 \u03ba\u03b1\u03b9").counts[0] == 0);
}

TEST_CASE("BLEU formats like sacreBLEU's text and JSON output", "[bleu]") {
  auto s = bleu1("the quick brown dog fox jumps over", "the quick brown fox jumps over");
  CHECK(s.format(1) ==
        "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3 = 41.1 85.7/66.7/40.0/12.5 "
        "(BP = 1.000 ratio = 1.167 hyp_len = 7 ref_len = 6)");
  CHECK(s.format(1, false, true) ==
        "BLEU|#:1|c:mixed|e:no|tok:13a|s:exp|v:2.4.3 = 41.1 85.7/66.7/40.0/12.5 "
        "(BP = 1.000 ratio = 1.167 hyp_len = 7 ref_len = 6)");
  CHECK(s.format(0, true) == "41");
  CHECK(s.format(4, true) == "41.1134");
  CHECK(s.to_json(1) ==
        "{\n"
        " \"name\": \"BLEU\",\n"
        " \"score\": 41.1,\n"
        " \"signature\": \"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3\",\n"
        " \"verbose_score\": \"85.7/66.7/40.0/12.5 (BP = 1.000 ratio = 1.167 hyp_len = 7 ref_len = 6)\",\n"
        " \"nrefs\": \"1\",\n"
        " \"case\": \"mixed\",\n"
        " \"eff\": \"no\",\n"
        " \"tok\": \"13a\",\n"
        " \"smooth\": \"exp\",\n"
        " \"version\": \"2.4.3\"\n"
        "}");
  CHECK_THROWS_WITH(s.format(-1), Contains("width -1"));
}

TEST_CASE("python float repr and fixed formatting match Python", "[bleu]") {
  CHECK(python_float_repr(32.5) == "32.5");
  CHECK(python_float_repr(100.0) == "100.0");
  CHECK(python_float_repr(0.0) == "0.0");
  CHECK(python_float_repr(0.1) == "0.1");
  CHECK(python_float_repr(41.1134) == "41.1134");
  CHECK(python_float_repr(1e16) == "1e+16");
  CHECK(python_float_repr(1.5e-5) == "1.5e-05");
  CHECK(python_float_repr(0.0001) == "0.0001");
  CHECK(python_float_repr(123456789.0) == "123456789.0");
  // Round half to even on the exact binary value, like Python's format().
  CHECK(format_fixed(0.125, 2) == "0.12");
  CHECK(format_fixed(0.375, 2) == "0.38");
  CHECK(format_fixed(2.5, 0) == "2");
  CHECK(json_quote("a\"b\\c\n") == "\"a\\\"b\\\\c\\n\"");
  CHECK(nrefs_value({2, 2, 2}) == "2");
  CHECK(nrefs_value({2, 1, 2}) == "var");
}

TEST_CASE("empty references are skipped, giving a variable reference count", "[bleu]") {
  // Segment 2 has only ref1; sacreBLEU drops empty reference strings.
  auto s = Bleu().corpus_score({"a b c d", "e f g h"}, {{"a b c d", "e f g h"}, {"a b c d", ""}});
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format() == "nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3");
}

TEST_CASE("BLEU rejects malformed corpora with messages naming the problem", "[bleu]") {
  Bleu bleu;
  CHECK_THROWS_WITH(bleu.corpus_score({}, {{}}), Contains("no hypotheses"));
  CHECK_THROWS_WITH(bleu.corpus_score({"a"}, {}), Contains("no reference streams"));
  CHECK_THROWS_WITH(bleu.corpus_score({"a", "b"}, {{"a"}}),
                    Contains("reference stream 1 has 1 segments but there are 2 hypotheses"));
  CHECK_THROWS_WITH(bleu.corpus_score({"a", "b"}, {{"a", ""}}), Contains("segment 2 has only empty references"));
  CHECK_THROWS_WITH(bleu.corpus_score({"a", "b\xff"}, {{"a", "b"}}), Contains("segment 2"));
  CHECK_THROWS_WITH(bleu.corpus_score({"a", "b\xff"}, {{"a", "b"}}), Contains("invalid UTF-8"));
  BleuOptions bad;
  bad.max_ngram_order = 0;
  CHECK_THROWS_WITH(Bleu(bad), Contains("max n-gram order 0"));
  BleuOptions tok;
  tok.tokenize = "moses";
  CHECK_THROWS_WITH(Bleu(tok), Contains("unknown tokenizer 'moses'"));
  CHECK_THROWS_WITH(compute_bleu(BleuStats{}, SmoothMethod::Exp, {}, false, 4), Contains("expected 4"));
}

TEST_CASE("a different maximum n-gram order changes the geometric mean", "[bleu]") {
  // Order 2 on the quick-brown example: (600/7 * 400/6)^(1/2) = 75.593
  BleuOptions o;
  o.max_ngram_order = 2;
  auto s = bleu1("the quick brown dog fox jumps over", "the quick brown fox jumps over", o);
  CHECK(s.precisions.size() == 2);
  CHECK(s.score == Approx(std::sqrt(600.0 / 7 * 400.0 / 6)).epsilon(1e-12));
  CHECK(s.verbose.rfind("85.7/66.7 (BP", 0) == 0);
}

// ---------------------------------------------------------------- tokenizers

TEST_CASE("13a splits ASCII punctuation but keeps numbers together", "[bleu]") {
  CHECK(tokenize_13a("Hello, world!") == "Hello , world !");
  CHECK(tokenize_13a("1,000.5") == "1,000.5");
  // The padding spaces let the final period split off a number.
  CHECK(tokenize_13a("It costs $5.00.") == "It costs $ 5.00 .");
  CHECK(tokenize_13a("U.S.A.") == "U . S . A .");
  CHECK(tokenize_13a("x.y") == "x . y");
  CHECK(tokenize_13a("x,y") == "x , y");
  CHECK(tokenize_13a("3.14 and .5") == "3.14 and . 5");
  CHECK(tokenize_13a("Mr. Smith, Jr.") == "Mr . Smith , Jr .");
  CHECK(tokenize_13a("50% off") == "50 % off");
  CHECK(tokenize_13a("(a) [b] {c}") == "( a ) [ b ] { c }");
  CHECK(tokenize_13a("a/b") == "a / b");
  CHECK(tokenize_13a("e-mail@x.com") == "e-mail @ x . com");
  CHECK(tokenize_13a("#1 ~ ^ | ` _ @") == "# 1 ~ ^ | ` _ @");
}

TEST_CASE("13a splits a dash only after a digit and leaves apostrophes", "[bleu]") {
  CHECK(tokenize_13a("well-known") == "well-known");
  CHECK(tokenize_13a("1990-2000") == "1990 - 2000");
  CHECK(tokenize_13a("pages 3-4") == "pages 3 - 4");
  CHECK(tokenize_13a("don't") == "don't");
  CHECK(tokenize_13a("He said \"hi\"") == "He said \" hi \"");
}

TEST_CASE("13a unescapes entities, drops <skipped> and joins hyphenated line breaks", "[bleu]") {
  CHECK(tokenize_13a("AT&amp;T") == "AT & T");
  CHECK(tokenize_13a("&quot;x&quot;") == "\" x \"");
  CHECK(tokenize_13a("&lt;tag&gt;") == "< tag >");
  CHECK(tokenize_13a("&apos;") == "& apos ;");  // not one of the four unescaped entities
  CHECK(tokenize_13a("a <skipped> b") == "a b");
  CHECK(tokenize_13a("hyphen-\nated") == "hyphenated");
  CHECK(tokenize_13a("a\nb") == "a b");
  CHECK(tokenize_13a("  spaced \t out  ") == "spaced out");
  CHECK(tokenize_13a("") == "");
}

TEST_CASE("13a leaves non-ASCII text alone apart from whitespace", "[bleu]") {
  CHECK(tokenize_13a("naïve café.") == "naïve café .");
  CHECK(tokenize_13a("你好，世界。") == "你好，世界。");
  // U+00A0 (no-break space) is whitespace for Python's str.split().
  CHECK(tokenize_13a("a\u00a0b") == "a b");
  CHECK_THROWS_WITH(tokenize_13a("bad \xc3"), Contains("invalid UTF-8"));
}

TEST_CASE("intl splits Unicode punctuation and symbols", "[bleu]") {
  CHECK(tokenize_intl("Привет, мир!") == "Привет , мир !");
  CHECK(tokenize_intl("你好，世界。") == "你好 ， 世界 。");
  CHECK(tokenize_intl("«Hola», dijo.") == "« Hola » , dijo .");
  CHECK(tokenize_intl("¿Qué?") == "¿ Qué ?");
  CHECK(tokenize_intl("€5") == "€ 5");
  CHECK(tokenize_intl("a+b") == "a + b");
  CHECK(tokenize_intl("x=1") == "x = 1");
  CHECK(tokenize_intl("Mr. Smith") == "Mr . Smith");
}

TEST_CASE("intl keeps punctuation between digits, and a sentence-final number's period", "[bleu]") {
  CHECK(tokenize_intl("1,000.5") == "1,000.5");
  CHECK(tokenize_intl("١٬٠٠٠") == "١٬٠٠٠");  // Arabic-Indic digits with U+066C
  // mteval-v14's known quirk, kept by sacreBLEU: no padding, so a trailing
  // punctuation mark after a digit stays attached.
  CHECK(tokenize_intl("2019.") == "2019.");
  CHECK(tokenize_intl("3.5%") == "3.5%");
}

TEST_CASE("char tokenization makes every code point a token", "[bleu]") {
  CHECK(tokenize_char("ab c") == "a b   c");
  CHECK(tokenize_char("你好") == "你 好");
  CHECK(tokenize_char("") == "");
  BleuOptions o;
  o.tokenize = "char";
  // "你好世界" vs "你好世" : 3/4, 2/3, 1/2, 0/1 -> exp: 100/2; BP 1
  auto s = bleu1("你好世界", "你好世", o);
  CHECK(s.counts == std::vector<int64_t>{3, 2, 1, 0});
  CHECK(s.score == Approx(std::pow(75.0 * 200.0 / 3 * 50 * 50, 0.25)).epsilon(1e-12));
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|tok:char|smooth:exp|version:2.4.3");
}

TEST_CASE("tokenize none scores the text as it is split on whitespace", "[bleu]") {
  BleuOptions none;
  none.tokenize = "none";
  // Without 13a, "world!" and "world" differ.
  CHECK(bleu1("Hello world!", "Hello world !", none).counts[0] == 1);
  CHECK(bleu1("Hello world!", "Hello world !").counts[0] == 3);
  CHECK(make_tokenizer("none")->signature() == "none");
  CHECK((*make_tokenizer("none"))("a  b ") == "a  b ");
  CHECK((*make_tokenizer("intl"))("a,b") == "a , b");
  CHECK(make_tokenizer("intl")->signature() == "intl");
}

TEST_CASE("BLEU strips trailing whitespace before tokenizing", "[bleu]") {
  BleuOptions none;
  none.tokenize = "none";
  Bleu bleu(none);
  CHECK(bleu.preprocess("a b \t\u3000") == "a b");
  CHECK(bleu.preprocess("  a") == "  a");
  BleuOptions lc;
  lc.lowercase = true;
  CHECK(Bleu(lc).preprocess("ÀB, C ") == "àb , c");
}

// ---------------------------------------------------------------- SentencePiece

TEST_CASE("spm tokenization uses the pieces of a SentencePiece model", "[bleu]") {
  // Train a tiny BPE model with the sentencepiece package's spm_train.
  TempDir tmp;
  const std::string& dir = tmp.path;
  std::string corpus;
  const char* words[] = {"the", "cat", "sat", "on", "mat", "dog", "ran", "house", "green", "tree"};
  for (int i = 0; i < 200; ++i) {
    for (int k = 0; k < 8; ++k) corpus += std::string(k ? " " : "") + words[(i * 7 + k * 3 + i / 5) % 10];
    corpus += "\n";
  }
  write_file(dir, "corpus.txt", corpus);
  std::string cmd = "spm_train --input=" + dir + "/corpus.txt --model_prefix=" + dir +
                    "/tiny --vocab_size=30 --model_type=bpe --minloglevel=2 >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::string model = dir + "/tiny.model";

  auto tok = make_tokenizer("spm", model);
  CHECK(tok->signature() == "spm-tiny");
  std::string pieces = (*tok)("the cat sat on the green tree");
  // The pieces concatenate back to the text with U+2581 for spaces.
  std::string joined;
  for (char c : pieces)
    if (c != ' ') joined += c;
  CHECK(joined == "\u2581the\u2581cat\u2581sat\u2581on\u2581the\u2581green\u2581tree");
  CHECK(pieces.find(' ') != std::string::npos);
  // Same pieces as the spm_encode program prints.
  write_file(dir, "line.txt", "the cat sat on the green tree\n");
  REQUIRE(std::system(("spm_encode --model=" + model + " --output_format=piece < " + dir + "/line.txt > " + dir +
                       "/pieces.txt")
                          .c_str()) == 0);
  std::ifstream f(dir + "/pieces.txt");
  std::string expected;
  std::getline(f, expected);
  CHECK(pieces == expected);

  BleuOptions o;
  o.tokenize = "spm";
  o.spm_model = model;
  auto s = bleu1("the cat sat on the green tree", "the cat sat on the green tree", o);
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|tok:spm-tiny|smooth:exp|version:2.4.3");
  CHECK(make_tokenizer("flores200", model)->signature() == "flores200");
  CHECK(make_tokenizer("flores101", model)->signature() == "flores101");
  // A loaded tokenizer can be shared through the options.
  BleuOptions shared;
  shared.tokenizer = tok;
  CHECK(Bleu(shared).signature("1").format() == s.signature.format());
  CHECK_THROWS_WITH(make_tokenizer("spm", dir + "/missing.model"), Contains("cannot load SentencePiece model"));
}

TEST_CASE("spm without a model file explains that one must be supplied", "[bleu]") {
  CHECK_THROWS_WITH(make_tokenizer("spm"), Contains("--spm-model"));
  BleuOptions o;
  o.tokenize = "flores101";
  CHECK_THROWS_WITH(Bleu(o), Contains("needs a SentencePiece model"));
}

// ---------------------------------------------------------------- Unicode

TEST_CASE("strict UTF-8 decoding rejects what Python's codec rejects", "[bleu]") {
  std::u32string out;
  size_t bad = 99;
  CHECK(unicode::decode_utf8("a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", out));
  CHECK(out == U"a\u00e9\u4e2d\U0001F600");
  CHECK_FALSE(unicode::decode_utf8("ab\xc0\x80", out, &bad));  // overlong NUL
  CHECK(bad == 2);
  CHECK_FALSE(unicode::decode_utf8("\xed\xa0\x80", out, &bad));  // surrogate U+D800
  CHECK(bad == 0);
  CHECK_FALSE(unicode::decode_utf8("\xf4\x90\x80\x80", out));  // above U+10FFFF
  CHECK_FALSE(unicode::decode_utf8("\xe0\x9f\xbf", out));      // overlong 3-byte
  CHECK_FALSE(unicode::decode_utf8("x\xe4\xb8", out, &bad));   // truncated
  CHECK(bad == 1);
  CHECK_FALSE(unicode::is_valid_utf8("\x80"));
  CHECK(unicode::is_valid_utf8(""));
  CHECK(unicode::encode_utf8(U"a\u00e9\u4e2d\U0001F600") == "a\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
}

TEST_CASE("lowercasing follows Python's str.lower including final sigma", "[bleu]") {
  using unicode::lower_utf8;
  CHECK(lower_utf8("ABC xyz") == "abc xyz");
  CHECK(lower_utf8("ÀÉÎ") == "àéî");
  CHECK(lower_utf8("\u039f\u0394\u039f\u03a3") == "\u03bf\u03b4\u03bf\u03c2");  // word-final: U+03C2
  CHECK(lower_utf8("\u03a3\u039f\u03a6") == "\u03c3\u03bf\u03c6");  // not final: U+03C3
  CHECK(lower_utf8("\u0391\u03a3 \u0392\u03a3") == "\u03b1\u03c2 \u03b2\u03c2");
  CHECK(lower_utf8("\u0391\u03a3\u03a3") == "\u03b1\u03c3\u03c2");  // a cased letter follows the first
  CHECK(lower_utf8("\u03a3") == "\u03c3");  // no cased letter before it
  CHECK(lower_utf8("\u0391.\u03a3") == "\u03b1.\u03c2");  // '.' is case-ignorable
  CHECK(lower_utf8("İ") == "i\u0307");          // one-to-many mapping
  CHECK(lower_utf8("ǅ") == "ǆ");               // titlecase digraph
  CHECK(lower_utf8("ЖЯ") == "жя");
  CHECK(lower_utf8("Ⅻ") == "ⅻ");
  CHECK(lower_utf8("\U00010400") == "\U00010428");  // Deseret
  CHECK(lower_utf8("ß中") == "ß中");
}

TEST_CASE("whitespace helpers treat Unicode spaces like Python", "[bleu]") {
  auto toks = unicode::split_whitespace_utf8(" a\u00a0b\u3000c\x1c d\u2028");
  REQUIRE(toks.size() == 4);
  CHECK(toks[0] == "a");
  CHECK(toks[1] == "b");
  CHECK(toks[2] == "c");
  CHECK(toks[3] == "d");
  CHECK(unicode::split_whitespace_utf8("   ").empty());
  CHECK(unicode::rstrip_utf8("ab \u00a0\t") == "ab");
  CHECK(unicode::rstrip_utf8("a\u200b") == "a\u200b");  // zero-width space is not whitespace
  CHECK(unicode::rstrip_utf8("é") == "é");
  CHECK(unicode::is_space(U'\u0085'));
  CHECK_FALSE(unicode::is_space(U'\u200b'));
  CHECK(unicode::is_punctuation(U'\u3002'));
  CHECK(unicode::is_symbol(U'\u20ac'));
  CHECK(unicode::is_number(U'\u0662'));
  CHECK_FALSE(unicode::is_punctuation(U'a'));
}

// ---------------------------------------------------------------- command line

TEST_CASE("strata-bleu prints sacreBLEU's BLEU line for files", "[bleu]") {
  TempDir tmp;
  const std::string& d = tmp.path;
  auto ref = write_file(d, "ref.txt", "the quick brown fox jumps over\nthe cat sat on the mat\n");
  auto hyp = write_file(d, "hyp.txt", "the quick brown dog fox jumps over\nthe cat sat on the mat\n");
  // Corpus: 12/13, 9/11, 6/9, 3/7 (see the single-segment cases); lengths 13 vs 12.
  double expected = std::pow(1200.0 / 13 * 900.0 / 11 * 600.0 / 9 * 300.0 / 7, 0.25);
  auto r = run_bleu({ref, "-i", hyp});
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  CHECK(r.out == "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3 = " + format_fixed(expected, 1) +
                     " 92.3/81.8/66.7/42.9 (BP = 1.000 ratio = 1.083 hyp_len = 13 ref_len = 12)\n");

  SECTION("-b prints only the score and -w sets the decimals") {
    auto b = run_bleu({ref, "-i", hyp, "-b", "-w", "3"});
    CHECK(b.rc == 0);
    CHECK(b.out == format_fixed(expected, 3) + "\n");
  }
  SECTION("the hypothesis comes from stdin without -i") {
    auto s = run_bleu({ref, "-b"}, "the quick brown dog fox jumps over\nthe cat sat on the mat\n");
    CHECK(s.rc == 0);
    CHECK(s.out == format_fixed(expected, 1) + "\n");
    // Windows line endings are trailing whitespace and vanish.
    auto crlf = run_bleu({ref, "-b"}, "the quick brown dog fox jumps over\r\nthe cat sat on the mat\r\n");
    CHECK(crlf.out == s.out);
  }
  SECTION("-m bleu chrf prints both, aligned on '='") {
    auto m = run_bleu({ref, "-i", hyp, "-m", "chrf", "bleu"});
    CHECK(m.rc == 0);
    std::istringstream lines(m.out);
    std::string l1, l2;
    std::getline(lines, l1);
    std::getline(lines, l2);
    CHECK(l1.find("BLEU|") != std::string::npos);  // sorted: BLEU first
    CHECK(l2.rfind("chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3 = ", 0) == 0);
    CHECK(l1.find('=') == l2.find('='));
    auto scores = run_bleu({ref, "-i", hyp, "-m", "bleu", "chrf", "-b"});
    CHECK(std::count(scores.out.begin(), scores.out.end(), '\n') == 2);
  }
  SECTION("sacreBLEU's short spellings work") {
    auto lc = run_bleu({ref, "-i", hyp, "-lc", "-tok", "intl", "-sh"});
    CHECK(lc.rc == 0);
    CHECK(lc.out.rfind("BLEU|#:1|c:lc|e:no|tok:intl|s:exp|v:2.4.3 = ", 0) == 0);
    auto sv = run_bleu({ref, "-i", hyp, "-s", "floor", "-sv", "0.2", "-f", "json"});
    CHECK(sv.rc == 0);
    CHECK(sv.out.find("\"smooth\": \"floor[0.20]\"") != std::string::npos);
    CHECK(sv.out.front() == '{');
  }
  SECTION("chrF++ through --chrf-word-order 2") {
    auto c = run_bleu({ref, "-i", hyp, "-m", "chrf", "--chrf-word-order", "2"});
    CHECK(c.rc == 0);
    CHECK(c.out.rfind("chrF2++|nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.4.3 = ", 0) == 0);
  }
}

TEST_CASE("strata-bleu reads several reference files or tab-separated references", "[bleu]") {
  TempDir tmp;
  const std::string& d = tmp.path;
  auto r1 = write_file(d, "r1", "the cat is on the mat\n");
  auto r2 = write_file(d, "r2", "there is a cat on the mat\n");
  auto tabs = write_file(d, "tabs", "the cat is on the mat\tthere is a cat on the mat\n");
  auto hyp = write_file(d, "hyp", "the the the the the the the\n");
  double expected = std::pow(200.0 / 7 * 100.0 / 12 * 5 * 3.125, 0.25);  // Papineni case above
  auto a = run_bleu({r1, r2, "-i", hyp, "-b", "-w", "4"});
  CHECK(a.rc == 0);
  CHECK(a.out == format_fixed(expected, 4) + "\n");
  auto b = run_bleu({tabs, "-i", hyp, "-nr", "2", "-b", "-w", "4"});
  CHECK(b.rc == 0);
  CHECK(b.out == a.out);
  auto c = run_bleu({tabs, "-i", hyp, "--num-refs", "3"});
  CHECK(c.rc == 1);
  CHECK_THAT(c.err, Contains("expected 3 tab-separated references, found 2"));
  auto e = run_bleu({r1, r2, "-i", hyp, "-nr", "2"});
  CHECK(e.rc == 1);
  CHECK_THAT(e.err, Contains("2 reference files were given"));
}

TEST_CASE("strata-bleu fails with one line and exit code 1 on bad input", "[bleu]") {
  TempDir tmp;
  const std::string& d = tmp.path;
  auto ref = write_file(d, "ref.txt", "a b c\nd e f\n");
  auto hyp3 = write_file(d, "hyp3.txt", "a b c\nd e f\ng h i\n");
  auto bad = write_file(d, "bad.txt", "a b c\nd \xff f\n");
  auto empty_ref = write_file(d, "empty_ref.txt", "a b c\n\n");
  auto one_line = [](const std::string& s) { return std::count(s.begin(), s.end(), '\n') == 1; };

  auto missing = run_bleu({d + "/nope.txt", "-i", hyp3});
  CHECK(missing.rc == 1);
  CHECK_THAT(missing.err, Contains("cannot open reference file '" + d + "/nope.txt'"));
  CHECK(one_line(missing.err));
  CHECK(missing.out.empty());

  auto missing_hyp = run_bleu({ref, "-i", d + "/nohyp.txt"});
  CHECK(missing_hyp.rc == 1);
  CHECK_THAT(missing_hyp.err, Contains("cannot open hypothesis file"));

  auto mismatch = run_bleu({ref, "-i", hyp3});
  CHECK(mismatch.rc == 1);
  CHECK_THAT(mismatch.err, Contains("hypothesis '" + hyp3 + "' has 3 lines but reference '" + ref + "' has 2"));
  CHECK(one_line(mismatch.err));

  auto utf8 = run_bleu({ref, "-i", bad});
  CHECK(utf8.rc == 1);
  CHECK_THAT(utf8.err, Contains("hypothesis file '" + bad + "' line 2: invalid UTF-8 at byte 2"));
  CHECK(one_line(utf8.err));

  auto stdin_utf8 = run_bleu({ref}, "ok\n\xc3(\n");
  CHECK(stdin_utf8.rc == 1);
  CHECK_THAT(stdin_utf8.err, Contains("stdin line 2: invalid UTF-8"));

  auto empty = run_bleu({empty_ref, "-i", ref});
  CHECK(empty.rc == 1);
  CHECK_THAT(empty.err, Contains("line 2 is empty in every reference"));

  auto nohyp = run_bleu({ref}, "");
  CHECK(nohyp.rc == 1);
  CHECK_THAT(nohyp.err, Contains("has no lines"));

  auto tabs = run_bleu({ref}, "a\tb\nc\n");
  CHECK(tabs.rc == 1);
  CHECK_THAT(tabs.err, Contains("multi-system evaluation is not supported"));

  auto noref = run_bleu({}, "a\n");
  CHECK(noref.rc == 1);
  CHECK_THAT(noref.err, Contains("no reference files"));

  auto metric = run_bleu({ref, "-i", ref, "-m", "ter"});
  CHECK(metric.rc == 1);
  CHECK_FALSE(metric.err.empty());

  auto width = run_bleu({ref, "-i", ref, "-w", "-2"});
  CHECK(width.rc == 1);

  auto spm = run_bleu({ref, "-i", ref, "--tokenize", "spm"});
  CHECK(spm.rc == 1);
  CHECK_THAT(spm.err, Contains("--spm-model"));
  CHECK(one_line(spm.err));
}

TEST_CASE("strata-bleu reads lines like Python", "[bleu]") {
  std::istringstream unix_text("a \nb\t\n\nc");
  auto lines = read_lines(unix_text, "x", false);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "a");
  CHECK(lines[1] == "b");
  CHECK(lines[2] == "");
  CHECK(lines[3] == "c");
  // Files split on '\n' only: a lone '\r' stays inside the line.
  std::istringstream cr_file("a\rb\n");
  CHECK(read_lines(cr_file, "x", false) == std::vector<std::string>{"a\rb"});
  // stdin uses universal newlines.
  std::istringstream cr_stdin("a\rb\r\nc\n");
  CHECK(read_lines(cr_stdin, "x", true) == std::vector<std::string>{"a", "b", "c"});
  std::istringstream none("");
  CHECK(read_lines(none, "x", true).empty());
  CHECK(normalize_sacrebleu_args({"-lc", "-tok", "x", "-lcx", "--lc"}) ==
        std::vector<std::string>{"--lowercase", "--tokenize", "x", "-lcx", "--lc"});
}

TEST_CASE("strata-bleu --help and --version exit 0", "[bleu]") {
  auto h = run_bleu({"--help"});
  CHECK(h.rc == 0);
  CHECK_THAT(h.out, Contains("--tokenize"));
  auto v = run_bleu({"--version"});
  CHECK(v.rc == 0);
  CHECK_THAT(v.out, Contains("2.4.3"));
}
