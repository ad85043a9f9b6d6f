// [data] fairseq data-bin: dict.txt (Dictionary) and the mmap .idx/.bin
// (MMapIndexedDataset), including Megatron's doc_idx variant and corruption.
#include <cstring>
#include <filesystem>
#include <random>

#include "strata/core/error.h"
#include "strata/data/corpus_layout.h"
#include "strata/data/binary_dataset.h"
#include "strata/data/fairseq_dictionary.h"
#include "strata/data/fairseq_indexed_dataset.h"
#include "test_data_util.h"

using namespace strata;
using namespace strata::data;
using Catch::Contains;

namespace {

// An independent writer following fairseq's MMapIndexedDataset.Index.writer and
// MMapIndexedDatasetBuilder byte by byte (explicit little-endian shifts).
struct FairseqFiles {
  std::vector<uint8_t> idx, bin;
};

void le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; ++k) out.push_back(uint8_t(v >> (8 * k)));
}

FairseqFiles fairseq_bytes(const std::vector<std::vector<int64_t>>& sents, uint8_t code, int elem,
                           bool megatron = false) {
  FairseqFiles f;
  const char magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
  for (char c : magic) f.idx.push_back(uint8_t(c));
  le(f.idx, 1, 8);     // struct.pack("<Q", 1)
  le(f.idx, code, 1);  // struct.pack("<B", code)
  le(f.idx, sents.size(), 8);
  if (megatron) le(f.idx, 2, 8);  // doc_count: doc_idx = [0, len]
  std::vector<uint64_t> pointers;
  for (const auto& s : sents) {
    pointers.push_back(f.bin.size());
    for (int64_t v : s) le(f.bin, uint64_t(v), elem);  // two's complement, truncated to the element
  }
  for (const auto& s : sents) le(f.idx, s.size(), 4);  // np.int32 sizes
  for (uint64_t p : pointers) le(f.idx, p, 8);         // np.int64 pointers (bytes)
  if (megatron) {
    le(f.idx, 0, 8);
    le(f.idx, sents.size(), 8);
  }
  return f;
}

void write_fairseq(const std::string& prefix, const FairseqFiles& f) {
  test::write_bytes(prefix + ".idx", f.idx);
  test::write_bytes(prefix + ".bin", f.bin);
}

}  // namespace

// ------------------------------------------------------------------ dictionary

TEST_CASE("fairseq dictionary starts with its four specials", "[data]") {
  FairseqDictionary d;
  CHECK(d.size() == 4);
  CHECK(d.symbol(0) == "<s>");
  CHECK(d.symbol(1) == "<pad>");
  CHECK(d.symbol(2) == "</s>");
  CHECK(d.symbol(3) == "<unk>");
  CHECK(d.bos() == 0);
  CHECK(d.pad() == 1);
  CHECK(d.eos() == 2);
  CHECK(d.unk() == 3);
  CHECK(d.id("nothing") == 3);
}

TEST_CASE("fairseq dict.txt loads symbols after the specials in file order", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("dict.txt"),
                   "▁the 1000\n,\t 900\n▁Haus 12\r\nword with spaces 7\n▁a 3 #fairseq:overwrite\n▁zero 0\n");
  auto d = FairseqDictionary::load(dir.file("dict.txt"));
  REQUIRE(d.size() == 10);
  CHECK(d.id("▁the") == 4);
  CHECK(d.count(4) == 1000);
  CHECK(d.id(",\t") == 5);  // split at the last space only: the tab stays in the symbol
  CHECK(d.id("▁Haus") == 6);          // "\r\n" endings are stripped
  CHECK(d.id("word with spaces") == 7);  // rsplit(" ", 1): spaces stay in the symbol
  CHECK(d.id("▁a") == 8);             // overwrite of a new symbol just adds it
  CHECK(d.count(9) == 0);
  CHECK(d.id("▁missing") == d.unk());
  CHECK(d.contains("▁zero"));
  CHECK_FALSE(d.contains("▁missing"));
  REQUIRE_THROWS_WITH(d.symbol(10), Contains("id 10 out of range for a dictionary of 10"));
}

TEST_CASE("fairseq dict.txt overwrite flag re-binds an existing symbol to a new id", "[data]") {
  test::TempDir dir;
  test::write_file(dir.file("dict.txt"), "▁x 5\n▁y 4\n▁x 9 #fairseq:overwrite\n<unk> 1 #fairseq:overwrite\n");
  auto d = FairseqDictionary::load(dir.file("dict.txt"));
  REQUIRE(d.size() == 8);
  CHECK(d.id("▁x") == 6);     // the new id
  CHECK(d.symbol(4) == "▁x");  // the old id keeps its symbol
  CHECK(d.count(6) == 9);
  CHECK(d.id("<unk>") == 7);
  SECTION("saving writes the flag back so the file reloads identically") {
    d.save(dir.file("saved.txt"));
    auto e = FairseqDictionary::load(dir.file("saved.txt"));
    REQUIRE(e.size() == d.size());
    for (int32_t i = 0; i < d.size(); ++i) CHECK(e.symbol(i) == d.symbol(i));
    CHECK(e.id("▁x") == 6);
  }
}

TEST_CASE("fairseq dict.txt errors name the file and line", "[data]") {
  test::TempDir dir;
  struct Case {
    std::string text, message;
  };
  for (const Case& c : std::vector<Case>{
           {"▁a 1\n▁a 2\n", "dict.txt:2: duplicate symbol '▁a' (add the #fairseq:overwrite flag"},
           {"▁a 1\n</s> 2\n", "dict.txt:2: duplicate symbol '</s>'"},
           {"▁a 1\nnocount\n", "dict.txt:2: expected '<symbol> <count> [#fairseq:overwrite]'"},
           {"▁a 1\n\n", "dict.txt:2: expected"},
           {"▁a x1\n", "dict.txt:1: count 'x1' is not an integer"},
           {"▁a 1.5\n", "dict.txt:1: count '1.5' is not an integer"},
           {"#fairseq:overwrite\n", "dict.txt:1: expected"},
           {"▁a #fairseq:overwrite\n", "dict.txt:1: expected '<symbol> <count> #fairseq:overwrite'"}}) {
    test::write_file(dir.file("dict.txt"), c.text);
    INFO(c.message);
    REQUIRE_THROWS_WITH(FairseqDictionary::load(dir.file("dict.txt")), Contains(c.message));
  }
  REQUIRE_THROWS_WITH(FairseqDictionary::load(dir.file("none.txt")), Contains("cannot open") && Contains("none.txt"));
}

TEST_CASE("fairseq dictionary appends language tokens like the multilingual task", "[data]") {
  FairseqDictionary d;
  d.add_symbol("▁a", 3);
  d.add_symbol("__fr__");
  d.add_lang_tokens({"en", "fr", "de"});  // __fr__ exists already: keeps its id
  CHECK(d.size() == 8);
  CHECK(d.lang_id("fr") == 5);
  CHECK(d.lang_id("en") == 6);
  CHECK(d.lang_id("de") == 7);
  CHECK(d.languages() == std::vector<std::string>{"fr", "en", "de"});
  REQUIRE_THROWS_WITH(d.lang_id("nl"), Contains("no language token __nl__"));
  CHECK(d.add_symbol("▁a", 2) == 4);
  CHECK(d.count(4) == 5);
}

TEST_CASE("fairseq dictionary decodes SentencePiece symbols to text", "[data]") {
  FairseqDictionary d;
  for (const char* s : {"▁Hallo", "▁Welt", "!", "▁wie", "geht's"}) d.add_symbol(s);
  d.add_lang_tokens({"de"});
  // __de__ Hallo Welt! <pad> </s>: language token and specials drop, <unk> stays.
  CHECK(d.decode({9, 4, 5, 6, 1, 2}) == "Hallo Welt!");
  CHECK(d.decode({0, 7, 8, 3, 2}) == "wiegeht's<unk>");
  CHECK(d.decode({}) == "");
  CHECK(d.encode_symbols("▁Hallo ▁Welt ▁fremd") == std::vector<int32_t>{4, 5, 3});
  REQUIRE_THROWS_WITH(d.decode({4, 99}), Contains("id 99 out of range"));
}

// ------------------------------------------------------------- indexed dataset

TEST_CASE("fairseq mmap dataset reads every integer dtype", "[data]") {
  struct Dt {
    uint8_t code;
    int elem;
    int64_t lo, hi;
  };
  auto dt = GENERATE(Dt{1, 1, 0, 255}, Dt{2, 1, 0, 127}, Dt{3, 2, 0, 32767}, Dt{4, 4, 0, 2147483647},
                     Dt{5, 8, 0, 2147483647}, Dt{8, 2, 0, 65535}, Dt{9, 4, 0, 2147483647}, Dt{10, 8, 0, 2147483647});
  INFO("dtype code " << int(dt.code) << " (" << fairseq_dtype_name(dt.code) << ")");
  CHECK(fairseq_dtype_size(dt.code) == size_t(dt.elem));
  std::mt19937_64 rng(dt.code);
  std::vector<std::vector<int64_t>> sents(23);
  for (auto& s : sents) {
    s.resize(rng() % 9);
    for (auto& v : s) v = dt.lo + int64_t(rng() % uint64_t(dt.hi - dt.lo + 1));
  }
  sents[3] = {dt.hi, dt.lo, 2};
  test::TempDir dir;
  std::string prefix = dir.file("train.en-de.de");
  auto megatron = GENERATE(false, true);
  write_fairseq(prefix, fairseq_bytes(sents, dt.code, dt.elem, megatron));
  REQUIRE(fairseq_dataset_exists(prefix));
  auto ds = FairseqIndexedDataset::open(prefix);
  REQUIRE(ds->size() == sents.size());
  CHECK(ds->dtype_code() == dt.code);
  CHECK(ds->path() == prefix + ".bin");
  uint64_t total = 0;
  for (size_t i = 0; i < sents.size(); ++i) {
    auto got = ds->get(i);
    REQUIRE(got.size() == sents[i].size());
    for (size_t k = 0; k < got.size(); ++k) REQUIRE(got[k] == sents[i][k]);
    CHECK(ds->length(i) == int64_t(sents[i].size()));
    total += sents[i].size();
  }
  CHECK(ds->num_tokens() == total);
  CHECK(ds->doc_index() == (megatron ? std::vector<int64_t>{0, int64_t(sents.size())} : std::vector<int64_t>{}));
  SECTION("the library's writer produces the same bytes") {
    std::vector<std::vector<int32_t>> s32;
    for (const auto& s : sents) s32.emplace_back(s.begin(), s.end());
    write_fairseq_indexed_dataset(dir.file("mine"), s32, dt.code, megatron);
    auto ref = fairseq_bytes(sents, dt.code, dt.elem, megatron);
    CHECK(test::read_bytes(dir.file("mine.idx")) == ref.idx);
    CHECK(test::read_bytes(dir.file("mine.bin")) == ref.bin);
  }
}

TEST_CASE("fairseq mmap dataset rejects ids that cannot be token ids", "[data]") {
  test::TempDir dir;
  std::string prefix = dir.file("x");
  SECTION("negative int32") {
    write_fairseq(prefix, fairseq_bytes({{5, 2}, {7, -4, 2}}, 4, 4));
    auto ds = FairseqIndexedDataset::open(prefix);
    CHECK(ds->get(0) == std::vector<int32_t>{5, 2});
    REQUIRE_THROWS_WITH(ds->get(1), Contains("x.bin: offset 12: token id -4 of sentence 1 is negative"));
  }
  SECTION("int64 beyond int32") {
    write_fairseq(prefix, fairseq_bytes({{5, int64_t(1) << 33}}, 5, 8));
    REQUIRE_THROWS_WITH(FairseqIndexedDataset::open(prefix)->get(0), Contains("offset 8: token id 8589934592"));
  }
  SECTION("ids beyond the dictionary are found by check_ids") {
    write_fairseq(prefix, fairseq_bytes({{5, 2}, {70, 2}}, 8, 2));
    auto ds = FairseqIndexedDataset::open(prefix);
    ds->check_ids(71);
    REQUIRE_THROWS_WITH(ds->check_ids(70), Contains("x.bin: sentence 1 token 0 has id 70, outside the vocabulary of 70"));
  }
}

TEST_CASE("fairseq mmap dataset detects corrupt index and data files", "[data]") {
  test::TempDir dir;
  std::string prefix = dir.file("c");
  const std::vector<std::vector<int64_t>> sents = {{4, 5, 2}, {6, 2}, {7, 8, 9, 2}};
  const auto good = fairseq_bytes(sents, 8, 2);  // idx: 26 + 12*3 = 62 bytes; bin: 18 bytes
  REQUIRE(good.idx.size() == 62);
  auto check = [&](auto edit, const std::string& message) {
    auto f = good;
    edit(f);
    write_fairseq(prefix, f);
    INFO(message);
    REQUIRE_THROWS_WITH(FairseqIndexedDataset::open(prefix), Contains(message));
  };
  check([](auto& f) { f.idx[2] = 'X'; }, "c.idx: offset 0: bad magic");
  check([](auto& f) { std::memcpy(f.idx.data(), "TNTIDX\0\0", 8); }, "offset 0: legacy fairseq IndexedDataset (TNTIDX");
  check([](auto& f) { f.idx[9] = 2; }, "offset 9: unsupported version 2");
  check([](auto& f) { f.idx[17] = 6; }, "offset 17: dtype code 6 (float) is floating point");
  check([](auto& f) { f.idx[17] = 7; }, "offset 17: dtype code 7 (double) is floating point");
  check([](auto& f) { f.idx[17] = 11; }, "offset 17: unknown dtype code 11");
  check([](auto& f) { f.idx.resize(20); }, "c.idx: offset 20: index is 20 bytes, shorter than its 26-byte header");
  check([](auto& f) { f.idx.resize(61); }, "index is 61 bytes, 3 sentences need 62");
  check([](auto& f) { f.idx[18] = 200; }, "offset 18: count 200 needs more than the 62 bytes");
  check([](auto& f) { f.idx[26 + 4] = 0xFF, f.idx[26 + 5] = 0xFF, f.idx[26 + 6] = 0xFF, f.idx[26 + 7] = 0xFF; },
        "offset 30: sentence 1 has negative size -1");
  check([](auto& f) { f.idx[38 + 16] = 17; }, "offset 54: sentence 2 (4 uint16 at byte 17) lies outside");
  check([](auto& f) { f.bin.resize(17); }, "sentence 2 (4 uint16 at byte 10) lies outside " + prefix + ".bin (17 bytes)");
  SECTION("Megatron's doc_idx must be non-decreasing and within the sentences") {
    auto f = fairseq_bytes(sents, 8, 2, true);
    f.idx[f.idx.size() - 8] = 4;  // doc_idx[1] = 4 > 3 sentences
    write_fairseq(prefix, f);
    REQUIRE_THROWS_WITH(FairseqIndexedDataset::open(prefix), Contains("doc_idx[1] = 4 is not a non-decreasing sentence index in [0, 3]"));
  }
  SECTION("a missing .bin is named") {
    test::write_bytes(prefix + ".idx", good.idx);
    std::filesystem::remove(prefix + ".bin");
    CHECK_FALSE(fairseq_dataset_exists(prefix));
    REQUIRE_THROWS_WITH(FairseqIndexedDataset::open(prefix), Contains("c.bin: cannot open"));
  }
}

TEST_CASE("fairseq_dtype_for_vocab follows best_fitting_int_dtype", "[data]") {
  CHECK(fairseq_dtype_for_vocab(65499) == 8);
  CHECK(fairseq_dtype_for_vocab(65500) == 9);
  CHECK(fairseq_dtype_for_vocab(256206) == 9);
  CHECK(fairseq_dtype_is_integer(4));
  CHECK_FALSE(fairseq_dtype_is_integer(6));
  CHECK_FALSE(fairseq_dtype_is_integer(0));
  CHECK(std::string(fairseq_dtype_name(12)) == "unknown");
}

TEST_CASE("open_parallel reads a fairseq data-bin in either pair order", "[data]") {
  test::TempDir dir;
  // fairseq-preprocess output for en-de: train.en-de.{en,de}.{idx,bin} + dict.txt
  write_fairseq(dataset_prefix(dir.path(), "train", "en", "de", "en"), fairseq_bytes({{4, 5, 2}, {6, 2}}, 8, 2));
  write_fairseq(dataset_prefix(dir.path(), "train", "en", "de", "de"), fairseq_bytes({{7, 2}, {8, 9, 2}}, 8, 2));
  ParallelDataset fwd = open_parallel(dir.path(), "train", "en", "de");
  REQUIRE(fwd.size() == 2);
  CHECK(fwd.src->get(1) == std::vector<int32_t>{6, 2});
  CHECK(fwd.tgt->get(1) == std::vector<int32_t>{8, 9, 2});
  ParallelDataset back = open_parallel(dir.path(), "train", "de", "en");
  CHECK(back.src_lang == "de");
  CHECK(back.src->get(0) == std::vector<int32_t>{7, 2});
  CHECK(back.tgt->get(0) == std::vector<int32_t>{4, 5, 2});
  SECTION("Strata files win over fairseq files of the same name") {
    write_binary_dataset(dataset_prefix(dir.path(), "train", "en", "de", "en") + kBinaryExt, {{10, 2}}, TokenDType::U16, 20);
    write_binary_dataset(dataset_prefix(dir.path(), "train", "en", "de", "de") + kBinaryExt, {{11, 2}}, TokenDType::U16, 20);
    CHECK(open_parallel(dir.path(), "train", "en", "de").src->get(0) == std::vector<int32_t>{10, 2});
  }
  SECTION("sides of different lengths are refused") {
    write_fairseq(dataset_prefix(dir.path(), "valid", "en", "de", "en"), fairseq_bytes({{4, 2}}, 8, 2));
    write_fairseq(dataset_prefix(dir.path(), "valid", "en", "de", "de"), fairseq_bytes({{4, 2}, {5, 2}}, 8, 2));
    REQUIRE_THROWS_WITH(open_parallel(dir.path(), "valid", "en", "de"), Contains("has 1 sentences but") && Contains("has 2"));
  }
  SECTION("a missing direction lists what was tried") {
    REQUIRE_THROWS_WITH(open_parallel(dir.path(), "test", "en", "de"),
                        Contains("no test data for en->de") && Contains("test.en-de.en{.sbin,.idx/.bin}") &&
                            Contains("test.de-en.en"));
  }
}

TEST_CASE("fairseq_dict_path finds the shared or per-language dictionary", "[data]") {
  test::TempDir dir;
  REQUIRE_THROWS_WITH(fairseq_dict_path(dir.path(), {"en", "de"}), Contains("neither dict.txt nor dict.en.txt"));
  test::write_file(dir.file("dict.en.txt"), "▁a 1\n");
  REQUIRE_THROWS_WITH(fairseq_dict_path(dir.path(), {"en", "de"}), Contains("dict.de.txt is missing"));
  test::write_file(dir.file("dict.de.txt"), "▁b 1\n");
  REQUIRE_THROWS_WITH(fairseq_dict_path(dir.path(), {"en", "de"}), Contains("dict.de.txt differs from dict.en.txt"));
  test::write_file(dir.file("dict.de.txt"), "▁a 1\n");
  CHECK(fairseq_dict_path(dir.path(), {"en", "de"}) == dir.file("dict.en.txt"));
  test::write_file(dir.file("dict.txt"), "▁c 1\n");
  CHECK(fairseq_dict_path(dir.path(), {"en", "de"}) == dir.file("dict.txt"));
  CHECK(fairseq_dict_path(dir.path(), {}) == dir.file("dict.txt"));
}
