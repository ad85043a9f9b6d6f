// chrF and chrF++ against hand-worked examples of sacreBLEU 2.x's definition:
// per order n, P_n = matches / hypothesis n-grams and R_n = matches /
// reference n-grams over the corpus sums; orders where either side has no
// n-grams are left out of the averages ("effective order"); then
// chrF_beta = (1 + b^2) P R / (b^2 P + R) on the averaged P and R, times 100.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "strata/core/error.h"
#include "strata/eval/chrf.h"

using namespace strata::eval;
using Catch::Contains;

namespace {

ChrfScore chrf1(const std::string& hyp, const std::string& ref, ChrfOptions o = {}) {
  return Chrf(o).corpus_score({hyp}, {{ref}});
}

}  // namespace

TEST_CASE("chrF of an identical pair is 100", "[chrf]") {
  // "abc": orders 1..3 match fully; orders 4..6 have no n-grams on either
  // side and are left out.
  auto s = chrf1("abc", "abc");
  CHECK(s.score == Approx(100.0));
  CHECK(s.name == "chrF2");
  CHECK(s.beta == 2);
  CHECK(s.char_order == 6);
  CHECK(s.word_order == 0);
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3");
  CHECK(s.format(1) == "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3 = 100.0");
  CHECK(s.format(2, true) == "100.00");
}

TEST_CASE("chrF of a half-matching pair works out by hand", "[chrf]") {
  // hyp "ab", ref "ac"
  //   n=1: {a,b} vs {a,c}: 1 match -> P = R = 1/2
  //   n=2: {ab} vs {ac}:   0 match -> P = R = 0 (both sides have bigrams, so it counts)
  // avg P = avg R = 1/4; F2 = 5 * 1/16 / (4/4 + 1/4) = 0.25 -> 25.0
  auto s = chrf1("ab", "ac");
  CHECK(s.score == Approx(25.0).epsilon(1e-12));
  CHECK(s.format(1, true) == "25.0");
  auto stats = Chrf().segment_stats({"ab"}, {{"ac"}});
  REQUIRE(stats.size() == 1);
  REQUIRE(stats[0].size() == 18);
  CHECK(stats[0][0] == 2);  // hypothesis unigrams
  CHECK(stats[0][1] == 2);  // reference unigrams
  CHECK(stats[0][2] == 1);  // matches
  CHECK(stats[0][3] == 1);
  CHECK(stats[0][4] == 1);
  CHECK(stats[0][5] == 0);
  for (size_t k = 6; k < 18; ++k) CHECK(stats[0][k] == 0);
}

TEST_CASE("chrF weighs recall twice as much as precision", "[chrf]") {
  // hyp "ab", ref "abcd"
  //   n=1: P = 2/2, R = 2/4; n=2: P = 1/1, R = 1/3
  //   n=3, n=4: the hypothesis has none -> left out
  // avg P = 1, avg R = (1/2 + 1/3) / 2 = 5/12
  // F2 = 5 * 5/12 / (4 + 5/12) = 25/53 = 47.1698...
  CHECK(chrf1("ab", "abcd").score == Approx(100.0 * 25 / 53).epsilon(1e-12));
  // Swapping the roles: avg P = 5/12, avg R = 1 -> F2 = 5 * 5/12 / (5/3 + 1) = 25/32
  CHECK(chrf1("abcd", "ab").score == Approx(100.0 * 25 / 32).epsilon(1e-12));
  // beta = 1 is the harmonic mean: 2 * 5/12 / (1 + 5/12) = 10/17
  ChrfOptions b1;
  b1.beta = 1;
  auto s = chrf1("ab", "abcd", b1);
  CHECK(s.score == Approx(100.0 * 10 / 17).epsilon(1e-12));
  CHECK(s.name == "chrF1");
}

TEST_CASE("chrF ignores whitespace unless asked to keep it", "[chrf]") {
  // Without whitespace both sides are "ab".
  CHECK(chrf1("a b", "ab").score == Approx(100.0));
  CHECK(chrf1("a\u00a0b\u3000", " ab").score == Approx(100.0));  // Unicode spaces too
  // With whitespace: hyp "a b" (3 characters) vs "ab"
  //   n=1: {a,' ',b} vs {a,b}: P = 2/3, R = 1; n=2: {"a ", " b"} vs {ab}: 0
  //   n=3: the reference has no trigram -> hypothesis count is not kept either
  // avg P = 1/3, avg R = 1/2; F2 = 5 * 1/6 / (4/3 + 1/2) = 5/11
  ChrfOptions ws;
  ws.whitespace = true;
  auto s = chrf1("a b", "ab", ws);
  CHECK(s.score == Approx(100.0 * 5 / 11).epsilon(1e-12));
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:yes|version:2.4.3");
  auto stats = Chrf(ws).segment_stats({"a b"}, {{"ab"}});
  CHECK(stats[0][6] == 0);  // n=3 hypothesis count dropped: the reference has no trigrams
  CHECK(stats[0][7] == 0);
}

TEST_CASE("corpus chrF sums statistics before computing the F-score", "[chrf]") {
  // seg1 "ab" vs "ab": n1 2/2/2, n2 1/1/1
  // seg2 "cde" vs "xy": n1 3/2/0, n2 2/1/0, n3 dropped (reference has none)
  // sums: n1 5/4/2 -> P = 2/5, R = 1/2; n2 3/2/1 -> P = 1/3, R = 1/2
  // avg P = 11/30, avg R = 1/2; F2 = 5 * 11/60 / (44/30 + 1/2) = 330/708 = 46.61
  // (the mean of the two sentence scores would be 50)
  auto s = Chrf().corpus_score({"ab", "cde"}, {{"ab", "xy"}});
  CHECK(s.score == Approx(100.0 * 330 / 708).epsilon(1e-12));
  CHECK(chrf1("ab", "ab").score == Approx(100.0));
  CHECK(chrf1("cde", "xy").score == 0.0);

  Chrf chrf;
  auto segs = chrf.segment_stats({"ab", "cde"}, {{"ab", "xy"}});
  std::vector<int64_t> total(18, 0);
  for (const auto& seg : segs)
    for (size_t k = 0; k < total.size(); ++k) total[k] += seg[k];
  CHECK(total[0] == 5);
  CHECK(total[1] == 4);
  CHECK(total[2] == 2);
  CHECK(chrf.score_from_stats(total).score == Approx(s.score));
  CHECK(chrf.f_score(total) == Approx(s.score));
}

TEST_CASE("chrF of an empty hypothesis is 0", "[chrf]") {
  CHECK(chrf1("", "abc").score == 0.0);
  CHECK(chrf1("   ", "abc").score == 0.0);
  CHECK(chrf1("xyz", "abc").score == 0.0);
}

TEST_CASE("chrF++ adds word unigrams and bigrams", "[chrf]") {
  ChrfOptions pp;
  pp.word_order = 2;
  auto same = chrf1("the cat", "the cat", pp);
  CHECK(same.score == Approx(100.0));
  CHECK(same.name == "chrF2++");
  CHECK(same.signature.format() == "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.4.3");
  // hyp "a b", ref "a c":
  //   chars "ab" vs "ac": n1 P = R = 1/2; n2 P = R = 0
  //   words {a,b} vs {a,c}: P = R = 1/2; word bigrams {"a b"} vs {"a c"}: 0
  // avg P = avg R = 1/4 -> 25.0
  auto s = chrf1("a b", "a c", pp);
  CHECK(s.score == Approx(25.0).epsilon(1e-12));
  auto stats = Chrf(pp).segment_stats({"a b"}, {{"a c"}});
  REQUIRE(stats[0].size() == 24);  // 3 * (6 + 2)
  CHECK(stats[0][18] == 2);        // word unigrams in the hypothesis
  CHECK(stats[0][20] == 1);        // word unigram matches
  CHECK(stats[0][21] == 1);        // word bigrams in the hypothesis
  CHECK(stats[0][23] == 0);
  // Punctuation split off words makes "cat." match "cat ." at word level.
  CHECK(chrf1("the cat.", "the cat .", pp).score == Approx(100.0));
}

TEST_CASE("chrF++ splits one punctuation mark off word ends like sacreBLEU", "[chrf]") {
  using V = std::vector<std::string>;
  CHECK(chrf_remove_punctuation("Hello, world!") == V{"Hello", ",", "world", "!"});
  CHECK(chrf_remove_punctuation("(hi)") == V{"(hi", ")"});  // only the end (sacreBLEU #124)
  CHECK(chrf_remove_punctuation("(hi") == V{"(", "hi"});
  CHECK(chrf_remove_punctuation(". !") == V{".", "!"});
  CHECK(chrf_remove_punctuation("!!") == V{"!", "!"});
  CHECK(chrf_remove_punctuation("é!") == V{"é", "!"});
  CHECK(chrf_remove_punctuation("é") == V{"é"});
  CHECK(chrf_remove_punctuation("«a»") == V{"«a»"});  // only ASCII punctuation
  CHECK(chrf_remove_punctuation("  ").empty());
}

TEST_CASE("chrF with several references keeps the best-matching one per segment", "[chrf]") {
  auto s = Chrf().corpus_score({"abc"}, {{"xyz"}, {"abc"}});
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format() == "nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3");
  // The statistics are those of the chosen reference, not a union.
  auto stats = Chrf().segment_stats({"ab"}, {{"ac"}, {"abcd"}});
  // sentence chrF vs "ac" is 25, vs "abcd" 47.17 -> the second is kept (4 reference unigrams)
  CHECK(stats[0][1] == 4);
  // A tie keeps the first reference. With unigrams only, hyp "aabb" against
  //   "ab":    P = 2/4, R = 2/2 -> F2 = 5 * 1/2 / (2 + 1)     = 5/6
  //   "aabbc": P = 4/4, R = 4/5 -> F2 = 5 * 4/5 / (4 + 4/5) = 5/6
  // and a second segment "x" vs "y" (1, 1, 0) makes the choice visible:
  //   first "ab":    sums (5, 3, 2): P = 2/5, R = 2/3 -> F2 = (4/3) / (8/5 + 2/3) = 10/17
  //   first "aabbc": sums (5, 6, 4): P = 4/5, R = 2/3 -> F2 = (8/3) / (16/5 + 2/3) = 20/29
  ChrfOptions uni;
  uni.char_order = 1;
  CHECK(Chrf(uni).corpus_score({"aabb", "x"}, {{"ab", "y"}, {"aabbc", "y"}}).score ==
        Approx(100.0 * 10 / 17).epsilon(1e-12));
  CHECK(Chrf(uni).corpus_score({"aabb", "x"}, {{"aabbc", "y"}, {"ab", "y"}}).score ==
        Approx(100.0 * 20 / 29).epsilon(1e-12));
  auto var = Chrf().corpus_score({"ab", "cd"}, {{"ab", "cd"}, {"", "cd"}});
  CHECK(var.signature.format() == "nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3");
}

TEST_CASE("chrF eps smoothing averages per-order F-scores like chrF++.py", "[chrf]") {
  // hyp "ab", ref "ac": F(n=1) = 5 * 1/4 / (4/2 + 1/2) = 1/2; n=2 has P = R = 0
  // and adds eps; n=3..6 have no n-grams and add about eps each.
  // chrF = 100 * (1/2 + ~6e-16) / 6 = 8.3333
  ChrfOptions eps;
  eps.eps_smoothing = true;
  auto s = chrf1("ab", "ac", eps);
  CHECK(s.score == Approx(100.0 / 12).epsilon(1e-12));
  CHECK(s.signature.format() == "nrefs:1|case:mixed|eff:no|nc:6|nw:0|space:no|version:2.4.3");
  CHECK(chrf1("abc", "abc", eps).score == Approx(50.0).epsilon(1e-12));  // 3 of 6 orders exist
}

TEST_CASE("chrF lowercasing is optional and shows in the signature", "[chrf]") {
  CHECK(chrf1("ABC", "abc").score == 0.0);
  ChrfOptions lc;
  lc.lowercase = true;
  auto s = chrf1("ABC", "abc", lc);
  CHECK(s.score == Approx(100.0));
  CHECK(s.signature.format(true) == "#:1|c:lc|e:yes|nc:6|nw:0|s:no|v:2.4.3");
  CHECK(chrf1("\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2", lc).score == Approx(100.0));
}

TEST_CASE("chrF counts code points, not bytes", "[chrf]") {
  // "日本" vs "日本語": n1 P = 2/2, R = 2/3; n2 P = 1/1, R = 1/2; n3 hyp none.
  // avg P = 1, avg R = 7/12; F2 = 5 * 7/12 / (4 + 7/12) = 35/55 = 7/11
  CHECK(chrf1("日本", "日本語").score == Approx(100.0 * 7 / 11).epsilon(1e-12));
}

TEST_CASE("chrF character order and its JSON rendering", "[chrf]") {
  ChrfOptions o;
  o.char_order = 1;  // unigrams only: hyp "ab" vs "ac" -> P = R = 1/2 -> 50
  auto s = chrf1("ab", "ac", o);
  CHECK(s.score == Approx(50.0));
  CHECK(s.to_json(1) ==
        "{\n"
        " \"name\": \"chrF2\",\n"
        " \"score\": 50.0,\n"
        " \"signature\": \"nrefs:1|case:mixed|eff:yes|nc:1|nw:0|space:no|version:2.4.3\",\n"
        " \"nrefs\": \"1\",\n"
        " \"case\": \"mixed\",\n"
        " \"eff\": \"yes\",\n"
        " \"nc\": \"1\",\n"
        " \"nw\": \"0\",\n"
        " \"space\": \"no\",\n"
        " \"version\": \"2.4.3\"\n"
        "}");
}

TEST_CASE("chrF rejects bad options and malformed input", "[chrf]") {
  ChrfOptions zero;
  zero.char_order = 0;
  CHECK_THROWS_WITH(Chrf(zero), Contains("must be >= 0 and not both 0"));
  ChrfOptions neg;
  neg.beta = -1;
  CHECK_THROWS_WITH(Chrf(neg), Contains("beta -1"));
  CHECK_THROWS_WITH(Chrf().f_score({1, 2, 3}), Contains("expected 18"));
  CHECK_THROWS_WITH(Chrf().corpus_score({"a"}, {{"a", "b"}}), Contains("reference stream 1 has 2 segments"));
  CHECK_THROWS_WITH(Chrf().corpus_score({"a\xc3"}, {{"a"}}), Contains("invalid UTF-8"));
  CHECK_THROWS_WITH(Chrf().corpus_score({"a"}, {{""}}), Contains("only empty references"));
  CHECK_THROWS_WITH(corpus_chrf({}, {{}}), Contains("chrF: no hypotheses"));
}
