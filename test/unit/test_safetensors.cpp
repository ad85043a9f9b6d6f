// safetensors: round trips for every dtype and layout, the exact byte layout
// of the header, reading files written by hand (as other tools write them),
// and one test per kind of corruption the reader must refuse.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "strata/train/safetensors.h"
#include "test_util.h"

using namespace strata;
using namespace strata::train;
namespace fs = std::filesystem;

namespace {

// A fresh directory under /tmp, removed with its contents at scope exit.
using test::TempDir;  // shared helper (test_util.h)

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes a safetensors file from its parts: the header text as given (no
// padding added) and the data buffer.
void write_raw(const std::string& path, const std::string& header, const std::string& buffer,
               int64_t declared_len = -1) {
  uint64_t n = declared_len >= 0 ? uint64_t(declared_len) : header.size();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char((n >> (8 * i)) & 0xff);
  std::ofstream out(path, std::ios::binary);
  out << bytes << header << buffer;
}

std::string float_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

Tensor random_of(DType dt, const Shape& s, uint64_t seed) {
  return Tensor::uniform(s, seed, 0, -100, 100, DType::F64).to(dt);
}

void require_same_tensor(const Tensor& got, const Tensor& want) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.is_contiguous());
  Tensor w = want.contiguous();
  REQUIRE(got.nbytes() == w.nbytes());
  if (w.nbytes() > 0) REQUIRE(std::memcmp(got.raw_data(), w.raw_data(), w.nbytes()) == 0);
}

}  // namespace

TEST_CASE("safetensors dtype names map both ways and refuse unknown names", "[io]") {
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64})
    CHECK(dtype_from_safetensors(safetensors_dtype(t)) == t);
  CHECK(std::string(safetensors_dtype(DType::BF16)) == "BF16");
  CHECK(std::string(safetensors_dtype(DType::I64)) == "I64");
  REQUIRE_THROWS_WITH(dtype_from_safetensors("U8"), Catch::Contains("U8"));
  REQUIRE_THROWS_WITH(dtype_from_safetensors("f32"), Catch::Contains("unsupported dtype"));
}

TEST_CASE("every dtype round-trips through a safetensors file bit for bit", "[io]") {
  TempDir dir;
  uint64_t seed = GENERATE(1, 2, 3);
  const std::vector<DType> dtypes = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64};
  SECTION("contiguous tensors of odd shapes") {
    NamedTensors ts;
    for (size_t i = 0; i < dtypes.size(); ++i) {
      ts.emplace_back("t" + std::to_string(i) + ".odd", random_of(dtypes[i], {7, 13}, seed + i));
      ts.emplace_back("t" + std::to_string(i) + ".vec", random_of(dtypes[i], {5}, seed + 10 + i));
      ts.emplace_back("t" + std::to_string(i) + ".3d", random_of(dtypes[i], {2, 3, 5}, seed + 20 + i));
    }
    save_safetensors(dir.file("a.safetensors"), ts);
    SafetensorsFile f = load_safetensors(dir.file("a.safetensors"));
    REQUIRE(f.tensors.size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      INFO(ts[i].first);
      CHECK(f.tensors[i].first == ts[i].first);
      require_same_tensor(f.tensors[i].second, ts[i].second);
    }
    CHECK(f.metadata.empty());
  }
  SECTION("non-contiguous views are written as their logical contents") {
    NamedTensors ts;
    for (size_t i = 0; i < dtypes.size(); ++i) {
      Tensor t = random_of(dtypes[i], {6, 11}, seed + i);
      Tensor v = test::non_contiguous(t);
      REQUIRE(!v.is_contiguous());
      ts.emplace_back(std::string("nc.") + safetensors_dtype(dtypes[i]), v);
      Tensor s = random_of(dtypes[i], {9}, seed + 30 + i);
      ts.emplace_back(std::string("strided.") + safetensors_dtype(dtypes[i]), test::non_contiguous(s));
      // a transposed slice with a storage offset
      Tensor big = random_of(dtypes[i], {5, 8}, seed + 40 + i);
      ts.emplace_back(std::string("slice.") + safetensors_dtype(dtypes[i]), big.slice(1, 2, 7).transpose(0, 1));
    }
    save_safetensors(dir.file("nc.safetensors"), ts);
    SafetensorsFile f = load_safetensors(dir.file("nc.safetensors"));
    REQUIRE(f.tensors.size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      INFO(ts[i].first);
      require_same_tensor(f.tensors[i].second, ts[i].second);
      CHECK(f.tensors[i].second.to(DType::F64).to_vector<double>() == ts[i].second.to(DType::F64).to_vector<double>());
    }
  }
  SECTION("scalars and empty tensors") {
    NamedTensors ts = {{"scalar", Tensor::scalar(3.5, DType::F64)},
                       {"empty", Tensor::empty({0, 4}, DType::F32)},
                       {"after", Tensor::full({3}, -2, DType::I32)},
                       {"empty_end", Tensor::empty({4, 0}, DType::BF16)}};
    save_safetensors(dir.file("s.safetensors"), ts);
    SafetensorsFile f = load_safetensors(dir.file("s.safetensors"));
    REQUIRE(f.tensors.size() == 4);
    CHECK(f.at("scalar").dim() == 0);
    CHECK(f.at("scalar").item() == 3.5);
    CHECK(f.at("empty").shape() == Shape{0, 4});
    CHECK(f.at("empty_end").shape() == Shape{4, 0});
    CHECK(f.at("after").to_vector<int32_t>() == std::vector<int32_t>{-2, -2, -2});
  }
}

TEST_CASE("safetensors metadata round-trips and tensors keep their order", "[io]") {
  TempDir dir;
  Metadata meta = {{"format", "pt"}, {"update", "1500"}, {"note", "üñí \"quoted\"\nline"}};
  NamedTensors ts = {{"z.last_name_first", Tensor::ones({2})}, {"a.first_name", Tensor::zeros({3})}};
  save_safetensors(dir.file("m.safetensors"), ts, meta);
  SafetensorsFile f = load_safetensors(dir.file("m.safetensors"));
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "z.last_name_first");
  CHECK(f.tensors[1].first == "a.first_name");
  CHECK(f.contains("a.first_name"));
  CHECK_FALSE(f.contains("b"));
  REQUIRE_THROWS_WITH(f.at("b"), Catch::Contains("no tensor 'b'"));
}

TEST_CASE("the safetensors header has the documented byte layout", "[io]") {
  TempDir dir;
  Tensor a = Tensor::from_vector<float>({1.0f, -2.0f, 0.5f}, {3});
  Tensor b = Tensor::from_vector<int64_t>({7, -1}, {1, 2});
  save_safetensors(dir.file("h.safetensors"), {{"w.a", a}, {"w.b", b}}, {{"k", "v"}});
  std::string bytes = read_bytes(dir.file("h.safetensors"));
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  CHECK(n % 8 == 0);  // the data buffer starts 8-aligned
  REQUIRE(bytes.size() == 8 + n + 12 + 16);
  std::string header = bytes.substr(8, n);
  CHECK(header.front() == '{');
  // padding is spaces after the JSON, nothing else
  size_t close = header.rfind('}');
  CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);
  CHECK(header.size() - close - 1 < 8);
  auto j = nlohmann::ordered_json::parse(header);
  REQUIRE(j.is_object());
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  CHECK(keys == std::vector<std::string>{"__metadata__", "w.a", "w.b"});
  CHECK(j["__metadata__"] == nlohmann::ordered_json({{"k", "v"}}));
  CHECK(j["w.a"]["dtype"] == "F32");
  CHECK(j["w.a"]["shape"] == nlohmann::ordered_json::array({3}));
  CHECK(j["w.a"]["data_offsets"] == nlohmann::ordered_json::array({0, 12}));
  CHECK(j["w.b"]["dtype"] == "I64");
  CHECK(j["w.b"]["shape"] == nlohmann::ordered_json::array({1, 2}));
  CHECK(j["w.b"]["data_offsets"] == nlohmann::ordered_json::array({12, 28}));
  // raw little-endian values
  const std::string data = bytes.substr(8 + n);
  CHECK(data.substr(0, 4) == std::string("\x00\x00\x80\x3f", 4));  // 1.0f
  CHECK(data.substr(4, 4) == std::string("\x00\x00\x00\xc0", 4));  // -2.0f
  CHECK(data.substr(12, 8) == std::string("\x07\x00\x00\x00\x00\x00\x00\x00", 8));
  CHECK(data.substr(20, 8) == std::string(8, '\xff'));  // -1
}

TEST_CASE("saving the same tensors twice gives identical bytes", "[io]") {
  TempDir dir;
  std::map<std::string, Tensor> m = {{"b", test::rand({4, 5}, 7)}, {"a", test::rand({3}, 8, DType::F64)}};
  save_safetensors(dir.file("1.safetensors"), m, {{"x", "y"}});
  save_safetensors(dir.file("2.safetensors"), m, {{"x", "y"}});
  CHECK(read_bytes(dir.file("1.safetensors")) == read_bytes(dir.file("2.safetensors")));
  // a map is written in key order
  SafetensorsFile f = load_safetensors(dir.file("1.safetensors"));
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "a");
  CHECK(f.tensors[1].first == "b");
  // overwriting replaces the file
  save_safetensors(dir.file("1.safetensors"), NamedTensors{{"c", Tensor::ones({1})}});
  CHECK(load_safetensors(dir.file("1.safetensors")).tensors.size() == 1);
}

TEST_CASE("a hand-written safetensors file with keys out of data order loads", "[io]") {
  TempDir dir;
  // Tensors listed in the header in a different order from their bytes, as
  // writers that sort keys produce; no metadata; padding spaces.
  std::string header =
      R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  while ((header.size() + 8) % 8) header += ' ';
  write_raw(dir.file("hand.safetensors"), header, float_bytes({9.0f, 1.5f, -3.0f}));
  SafetensorsFile f = load_safetensors(dir.file("hand.safetensors"));
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].first == "a");  // file order
  CHECK(f.at("a").item() == 9.0);
  CHECK(f.at("b").to_vector<float>() == std::vector<float>{1.5f, -3.0f});
}

TEST_CASE("the safetensors writer refuses names it cannot store", "[io]") {
  TempDir dir;
  std::string p = dir.file("w.safetensors");
  REQUIRE_THROWS_WITH(save_safetensors(p, NamedTensors{{"a", Tensor::ones({1})}, {"a", Tensor::ones({1})}}),
                      Catch::Contains("duplicate tensor 'a'"));
  REQUIRE_THROWS_WITH(save_safetensors(p, NamedTensors{{"__metadata__", Tensor::ones({1})}}),
                      Catch::Contains("reserved"));
  REQUIRE_THROWS_WITH(save_safetensors(p, NamedTensors{{"", Tensor::ones({1})}}), Catch::Contains("empty tensor name"));
  REQUIRE_THROWS_WITH(save_safetensors(p, NamedTensors{{"u", Tensor()}}), Catch::Contains("'u' is undefined"));
  REQUIRE_THROWS_WITH(save_safetensors(dir.file("no/such/dir.safetensors"), NamedTensors{{"a", Tensor::ones({1})}}),
                      Catch::Contains("cannot create"));
}

TEST_CASE("corrupt safetensors files are refused with a message naming the file and tensor", "[io]") {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  auto load = [&] { return load_safetensors(p); };
  auto header_for = [](const std::string& entries) { return "{" + entries + "}"; };
  const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(load_safetensors(dir.file("nope.safetensors")),
                        Catch::Contains("nope.safetensors") && Catch::Contains("cannot open"));
  }
  SECTION("a directory") {
    REQUIRE_THROWS_WITH(load_safetensors(dir.path), Catch::Contains("not a regular file"));
  }
  SECTION("shorter than the length field") {
    std::ofstream(p, std::ios::binary) << "abc";
    REQUIRE_THROWS_WITH(load(), Catch::Contains("bad.safetensors") && Catch::Contains("too short"));
  }
  SECTION("header length beyond the file") {
    write_raw(p, header_for(ok_a), float_bytes({1, 2}), 4096);
    REQUIRE_THROWS_WITH(load(), Catch::Contains("bad.safetensors") && Catch::Contains("header length 4096"));
  }
  SECTION("header length beyond 64 bits of sense") {
    write_raw(p, header_for(ok_a), float_bytes({1, 2}), INT64_MAX);
    REQUIRE_THROWS_WITH(load(), Catch::Contains("runs past the end"));
  }
  SECTION("bad JSON") {
    write_raw(p, "{\"a\": {\"dtype\": \n", float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("bad.safetensors") && Catch::Contains("bad JSON header"));
    try {
      load();
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find('\n') == std::string::npos);  // one line
    }
  }
  SECTION("header is not an object") {
    write_raw(p, "[1, 2]  ", "");
    REQUIRE_THROWS_WITH(load(), Catch::Contains("not a JSON object"));
  }
  SECTION("unknown dtype") {
    write_raw(p, header_for(R"("w.q":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})"), "xy");
    REQUIRE_THROWS_WITH(load(), Catch::Contains("bad.safetensors") && Catch::Contains("'w.q'") &&
                                    Catch::Contains("U8"));
  }
  SECTION("offsets past the buffer") {
    write_raw(p, header_for(R"("w.x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), float_bytes({1}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.x'") && Catch::Contains("run past"));
  }
  SECTION("reversed offsets") {
    write_raw(p, header_for(R"("w.r":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.r'") && Catch::Contains("reversed"));
  }
  SECTION("overlapping tensors") {
    write_raw(p,
              header_for(ok_a + R"(,"w.o":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})"),
              float_bytes({1, 2, 3}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.o'") && Catch::Contains("overlaps"));
  }
  SECTION("a hole between tensors") {
    write_raw(p,
              header_for(ok_a + R"(,"w.g":{"dtype":"F32","shape":[1],"data_offsets":[12,16]})"),
              float_bytes({1, 2, 3, 4}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.g'") && Catch::Contains("gap of 4 bytes"));
  }
  SECTION("bytes after the last tensor") {
    write_raw(p, header_for(ok_a), float_bytes({1, 2, 3}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("4 bytes after the last tensor"));
  }
  SECTION("shape does not match the byte count") {
    write_raw(p, header_for(R"("w.s":{"dtype":"F64","shape":[3],"data_offsets":[0,16]})"), float_bytes({1, 2, 3, 4}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.s'") && Catch::Contains("needs 24 bytes") &&
                                    Catch::Contains("span 16"));
  }
  SECTION("shape whose element count overflows") {
    write_raw(p, header_for(R"("w.big":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]})"),
              "");
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.big'") && Catch::Contains("overflows"));
  }
  SECTION("negative shape entry") {
    write_raw(p, header_for(R"("w.n":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.n'") && Catch::Contains("non-negative"));
  }
  SECTION("missing fields") {
    write_raw(p, header_for(R"("w.m":{"dtype":"F32","shape":[2]})"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.m'") && Catch::Contains("data_offsets"));
    write_raw(p, header_for(R"("w.d":{"shape":[2],"data_offsets":[0,8]})"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.d'") && Catch::Contains("dtype"));
    write_raw(p, header_for(R"("w.e":[1,2])"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.e'") && Catch::Contains("not an object"));
  }
  SECTION("a name listed twice") {
    write_raw(p, header_for(ok_a + R"(,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'a' appears twice"));
  }
  SECTION("metadata that is not string to string") {
    write_raw(p, header_for(R"("__metadata__":{"step":5},)" + ok_a), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("metadata 'step'"));
    write_raw(p, header_for(R"("__metadata__":[],)" + ok_a), float_bytes({1, 2}));
    REQUIRE_THROWS_WITH(load(), Catch::Contains("__metadata__"));
  }
  SECTION("a truncated copy of a good file") {
    save_safetensors(p, NamedTensors{{"w.t", test::rand({10, 10}, 3)}});
    std::string bytes = read_bytes(p);
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 5);
    REQUIRE_THROWS_WITH(load(), Catch::Contains("'w.t'") && Catch::Contains("run past"));
  }
}

TEST_CASE("a large tensor round-trips through safetensors", "[io]") {
  TempDir dir;
  Tensor big = test::rand({301, 257}, 11);
  Tensor emb = test::rand({70001}, 12, DType::F64);
  save_safetensors(dir.file("big.safetensors"), NamedTensors{{"big", big}, {"emb", emb}});
  SafetensorsFile f = load_safetensors(dir.file("big.safetensors"));
  require_same_tensor(f.at("big"), big);
  require_same_tensor(f.at("emb"), emb);
  CHECK(fs::file_size(dir.file("big.safetensors")) % 8 == (301 * 257 * 4 + 70001 * 8) % 8);
}
