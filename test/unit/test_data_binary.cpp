// [data] Strata's binary token dataset: round trip, documented layout, and
// detection of every kind of corruption with file and byte offset.
#include <cstring>
#include <filesystem>
#include <random>

#include "strata/core/error.h"
#include "strata/data/binary_dataset.h"
#include "test_data_util.h"

using namespace strata;
using namespace strata::data;
using Catch::Contains;

namespace {

std::vector<std::vector<int32_t>> random_sentences(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> out(n);
  for (auto& s : out) {
    s.resize(rng() % 13);  // includes empty sentences
    for (auto& id : s) id = int32_t(rng() % uint32_t(vocab));
  }
  return out;
}

template <class T>
T at(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

template <class T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

// Recomputes both checksums after a deliberate edit, so a test can reach the checks behind them.
void reseal(std::vector<uint8_t>& b) {
  uint64_t count = at<uint64_t>(b, 16);
  size_t tokens_at = 64 + (count + 1) * 8;
  put(b, 40, fnv1a64(b.data() + 64, (count + 1) * 8));
  put(b, 48, fnv1a64(b.data() + tokens_at, b.size() - tokens_at));
}

}  // namespace

TEST_CASE("fnv1a64 matches the published FNV-1a test vectors", "[data]") {
  CHECK(fnv1a64("", 0) == 0xcbf29ce484222325ull);
  CHECK(fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
  // Continuing a hash equals hashing the concatenation.
  CHECK(fnv1a64("bar", 3, fnv1a64("foo", 3)) == fnv1a64("foobar", 6));
}

TEST_CASE("binary dataset round-trips sentences", "[data]") {
  auto dtype = GENERATE(TokenDType::U16, TokenDType::I32);
  auto seed = GENERATE(1u, 2u);
  const int32_t vocab = dtype == TokenDType::U16 ? 65536 : 300000;
  auto sents = random_sentences(97, vocab, seed);
  sents[5] = {0, vocab - 1};  // both ends of the id range
  test::TempDir dir;
  std::string p = dir.file("train.en-de.de.sbin");
  write_binary_dataset(p, sents, dtype, vocab);
  auto ds = BinaryDataset::open(p);
  REQUIRE(ds->size() == sents.size());
  CHECK(ds->dtype() == dtype);
  CHECK(ds->vocab_size() == vocab);
  CHECK(ds->path() == p);
  uint64_t total = 0;
  std::vector<int32_t> got;
  for (size_t i = 0; i < sents.size(); ++i) {
    ds->get(i, got);
    REQUIRE(got == sents[i]);
    CHECK(ds->length(i) == int64_t(sents[i].size()));
    total += sents[i].size();
  }
  CHECK(ds->num_tokens() == total);
  CHECK(ds->lengths().size() == sents.size());
  ds->check_ids(vocab);
  REQUIRE_THROWS_WITH(ds->check_ids(vocab - 1), Contains("sentence 5 token 1 has id " + std::to_string(vocab - 1)));
  REQUIRE_THROWS_WITH(ds->get(sents.size()), Contains("sentence 97 out of range for 97 sentences"));
  // No temporary files are left behind.
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("binary dataset of zero sentences opens empty", "[data]") {
  test::TempDir dir;
  write_binary_dataset(dir.file("e.sbin"), {}, TokenDType::U16, 10);
  auto ds = BinaryDataset::open(dir.file("e.sbin"));
  CHECK(ds->size() == 0);
  CHECK(ds->num_tokens() == 0);
  CHECK(test::read_bytes(dir.file("e.sbin")).size() == 64 + 8);
}

TEST_CASE("binary dataset file layout is the one docs/formats.md describes", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("d.sbin");
  write_binary_dataset(p, {{5, 6, 2}, {}, {7, 2}}, TokenDType::U16, 100);
  auto b = test::read_bytes(p);
  REQUIRE(b.size() == 64 + 4 * 8 + 5 * 2);
  CHECK(std::string(b.begin(), b.begin() + 8) == "STRATATK");
  CHECK(at<uint32_t>(b, 8) == 1);    // version
  CHECK(at<uint32_t>(b, 12) == 1);   // u16
  CHECK(at<uint64_t>(b, 16) == 3);   // sentences
  CHECK(at<uint64_t>(b, 24) == 5);   // tokens
  CHECK(at<uint32_t>(b, 32) == 100); // vocab size
  CHECK(at<uint32_t>(b, 36) == 0);
  CHECK(at<uint64_t>(b, 56) == 0);
  const uint64_t offsets[] = {0, 3, 3, 5};
  for (int i = 0; i < 4; ++i) CHECK(at<uint64_t>(b, 64 + 8 * i) == offsets[i]);
  const uint16_t ids[] = {5, 6, 2, 7, 2};
  for (int i = 0; i < 5; ++i) CHECK(at<uint16_t>(b, 96 + 2 * i) == ids[i]);
  CHECK(at<uint64_t>(b, 40) == fnv1a64(b.data() + 64, 32));
  CHECK(at<uint64_t>(b, 48) == fnv1a64(b.data() + 96, 10));
  SECTION("i32 ids take four bytes each") {
    write_binary_dataset(p, {{5, 6, 2}, {}, {7, 2}}, TokenDType::I32, 100000);
    auto c = test::read_bytes(p);
    CHECK(c.size() == 64 + 4 * 8 + 5 * 4);
    CHECK(at<uint32_t>(c, 12) == 2);
    CHECK(at<int32_t>(c, 96 + 4 * 3) == 7);
  }
}

TEST_CASE("binary dataset writer validates ids and dtype", "[data]") {
  test::TempDir dir;
  REQUIRE_THROWS_WITH(write_binary_dataset(dir.file("a.sbin"), {{1, 2}, {3, 10}}, TokenDType::U16, 10),
                      Contains("id 10 of sentence 1 outside [0, 10)"));
  REQUIRE_THROWS_WITH(write_binary_dataset(dir.file("a.sbin"), {{-1}}, TokenDType::I32, 10), Contains("id -1"));
  REQUIRE_THROWS_WITH(BinaryDatasetWriter(dir.file("b.sbin"), TokenDType::U16, 70000),
                      Contains("u16 ids cannot hold a vocabulary of 70000"));
  REQUIRE_THROWS_WITH(BinaryDatasetWriter(dir.file("b.sbin"), TokenDType::I32, 0), Contains("vocab_size must be positive"));
  // A failed or abandoned writer leaves no files.
  { BinaryDatasetWriter w(dir.file("c.sbin"), TokenDType::U16, 10); w.add({1}); }
  CHECK(std::filesystem::is_empty(dir.path()));
  CHECK(token_dtype_for_vocab(65536) == TokenDType::U16);
  CHECK(token_dtype_for_vocab(65537) == TokenDType::I32);
}

TEST_CASE("binary dataset reader detects truncated and padded files", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("t.sbin");
  write_binary_dataset(p, {{4, 5, 6, 2}, {7, 2}, {8, 9, 2}}, TokenDType::I32, 50);
  const auto good = test::read_bytes(p);  // 64 + 32 + 36 = 132 bytes
  REQUIRE(good.size() == 132);
  struct Case {
    size_t keep;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{{0, "offset 0: file is 0 bytes, shorter than the 64-byte header"},
                                         {40, "offset 40: file is 40 bytes"},
                                         {80, "offset 80: file is 80 bytes, the header (3 sentences, 9 i32 tokens) needs exactly 132 (truncated)"},
                                         {131, "offset 131: file is 131 bytes, the header (3 sentences, 9 i32 tokens) needs exactly 132 (truncated)"}}) {
    INFO(c.message);
    test::write_bytes(p, std::vector<uint8_t>(good.begin(), good.begin() + long(c.keep)));
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains(p + ": ") && Contains(c.message));
  }
  auto padded = good;
  padded.push_back(0);
  test::write_bytes(p, padded);
  REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains("offset 132") && Contains("(trailing bytes)"));
  REQUIRE_THROWS_WITH(BinaryDataset::open(dir.file("missing.sbin")), Contains("missing.sbin: cannot open"));
}

TEST_CASE("binary dataset reader rejects bad header fields", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("h.sbin");
  write_binary_dataset(p, {{4, 2}, {5, 6, 2}}, TokenDType::U16, 50);
  const auto good = test::read_bytes(p);
  auto check = [&](auto edit, const std::string& message) {
    auto b = good;
    edit(b);
    test::write_bytes(p, b);
    INFO(message);
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains(message));
  };
  check([](auto& b) { b[0] = 'X'; }, "offset 0: bad magic");
  check([](auto& b) { put<uint32_t>(b, 8, 2); }, "offset 8: unsupported version 2");
  check([](auto& b) { put<uint32_t>(b, 12, 3); }, "offset 12: unknown dtype code 3");
  check([](auto& b) { put<uint32_t>(b, 32, 0); }, "offset 32: bad vocab_size 0");
  check([](auto& b) { put<uint32_t>(b, 32, 70000); }, "offset 32: vocab_size 70000 does not fit u16");
  check([](auto& b) { put<uint32_t>(b, 36, 1); }, "offset 36: reserved header fields are not zero");
  check([](auto& b) { put<uint64_t>(b, 16, 1ull << 60); }, "offset 16: header claims");
  check([](auto& b) { put<uint64_t>(b, 24, 6); }, "needs exactly");  // ntokens no longer matches the size
}

TEST_CASE("binary dataset reader rejects offsets out of range", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("o.sbin");
  write_binary_dataset(p, {{4, 2}, {5, 6, 2}, {7, 2}}, TokenDType::U16, 50);  // offsets 0 2 5 7
  const auto good = test::read_bytes(p);
  auto check = [&](size_t i, uint64_t v, const std::string& message) {
    auto b = good;
    put<uint64_t>(b, 64 + 8 * i, v);
    reseal(b);  // the structural check must fire, not the checksum
    test::write_bytes(p, b);
    INFO(message);
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains(p + ": offset " + std::to_string(64 + 8 * i)) && Contains(message));
  };
  check(0, 1, "offsets[0] is 1, must be 0");
  check(2, 1, "offsets[2] = 1 out of range [2, 7] (sentence 1)");  // decreasing
  check(2, 8, "offsets[2] = 8 out of range [2, 7]");               // past the tokens
  check(3, 6, "last offset 6 differs from ntokens 7");
}

TEST_CASE("binary dataset checksums catch flipped bytes", "[data]") {
  test::TempDir dir;
  std::string p = dir.file("c.sbin");
  write_binary_dataset(p, {{4, 2}, {5, 6, 2}}, TokenDType::U16, 50);
  const auto good = test::read_bytes(p);
  SECTION("in the token section") {
    auto b = good;
    b[b.size() - 3] ^= 0x01;
    test::write_bytes(p, b);
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains("offset 88: token section checksum mismatch"));
    // Skipping the content pass opens it (for trusted files on slow disks).
    BinaryDataset::Options opt;
    opt.verify_contents = false;
    CHECK(BinaryDataset::open(p, opt)->size() == 2);
  }
  SECTION("in the offsets section, where the structure stays plausible") {
    auto b = good;
    put<uint64_t>(b, 64 + 8, 3);  // offsets 0 3 5: still monotone
    test::write_bytes(p, b);
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains("offset 64: offsets section checksum mismatch"));
  }
  SECTION("an id outside the vocabulary behind a valid checksum") {
    auto b = good;
    put<uint16_t>(b, 88 + 2 * 3, 50);
    reseal(b);
    test::write_bytes(p, b);
    REQUIRE_THROWS_WITH(BinaryDataset::open(p), Contains("offset 94: token id 50 outside [0, 50)"));
  }
}

TEST_CASE("MappedFile maps whole files, empty ones included, and moves", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("f"), "hello");
  MappedFile m(dir.file("f"));
  REQUIRE(m.size() == 5);
  CHECK(std::string(reinterpret_cast<const char*>(m.data()), 5) == "hello");
  MappedFile n(std::move(m));
  CHECK(n.size() == 5);
  CHECK(m.data() == nullptr);
  CHECK(n.path() == dir.file("f"));
  test::write_file(dir.file("empty"), "");
  MappedFile e(dir.file("empty"));
  CHECK(e.size() == 0);
  CHECK(e.data() == nullptr);
  n = std::move(e);
  CHECK(n.size() == 0);
  REQUIRE_THROWS_WITH(MappedFile(dir.path()), Contains("not a regular file"));
  REQUIRE_THROWS_WITH(MappedFile(dir.file("none")), Contains("none: cannot open"));
}
