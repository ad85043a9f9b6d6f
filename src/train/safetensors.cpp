#include "strata/train/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian bytes; this reader/writer copies memory as is");

namespace strata::train {

namespace {

using ojson = nlohmann::ordered_json;

// A header larger than this is refused before it is read (the reference
// implementation uses the same limit), so a corrupt length cannot make us
// allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// nlohmann's messages quote the bytes they choked on; keep the error on one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > 300) s = s.substr(0, 300) + "...";
  return s;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

}  // namespace

bool SafetensorsFile::contains(const std::string& name) const {
  for (const auto& kv : tensors)
    if (kv.first == name) return true;
  return false;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& kv : tensors)
    if (kv.first == name) return kv.second;
  STRATA_FAIL() << "SafetensorsFile::at: no tensor '" << name << "' among " << tensors.size() << " tensors";
  return tensors.front().second;  // not reached
}

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  STRATA_FAIL() << "safetensors_dtype: unknown dtype " << int(t);
  return "";
}

DType dtype_from_safetensors(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "F64") return DType::F64;
  if (name == "F16") return DType::F16;
  if (name == "BF16") return DType::BF16;
  if (name == "I32") return DType::I32;
  if (name == "I64") return DType::I64;
  STRATA_FAIL() << "unsupported dtype '" << name << "' (expected F32, F64, F16, BF16, I32 or I64)";
  return DType::F32;
}

// ---------------------------------------------------------------- writing

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson m = ojson::object();
    for (const auto& kv : metadata) m[kv.first] = kv.second;
    header["__metadata__"] = std::move(m);
  }
  std::vector<Tensor> bodies;
  bodies.reserve(tensors.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    STRATA_CHECK(!name.empty()) << "save_safetensors: " << path << ": empty tensor name";
    STRATA_CHECK(name != "__metadata__") << "save_safetensors: " << path << ": '__metadata__' is reserved";
    STRATA_CHECK(seen.insert(name).second) << "save_safetensors: " << path << ": duplicate tensor '" << name << "'";
    STRATA_CHECK(t.defined()) << "save_safetensors: " << path << ": tensor '" << name << "' is undefined";
    STRATA_CHECK(t.device().is_cpu()) << "save_safetensors: " << path << ": tensor '" << name << "' is on "
                                      << t.device().str() << "; copy it to the CPU before saving";
    Tensor c = t.detach().contiguous();
    uint64_t n = c.nbytes();
    ojson e = ojson::object();
    e["dtype"] = safetensors_dtype(c.dtype());
    e["shape"] = c.shape();
    e["data_offsets"] = {offset, offset + n};
    header[name] = std::move(e);
    offset += n;
    bodies.push_back(std::move(c));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL() << "save_safetensors: " << path << ": cannot encode the header (" << one_line(e.what()) << ")";
  }
  // The byte buffer starts 8-aligned so readers may map tensors in place.
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');

  FilePtr f(std::fopen(path.c_str(), "wb"));
  STRATA_CHECK(f) << "save_safetensors: " << path << ": cannot create (" << std::strerror(errno) << ")";
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f.get()) == 8 && std::fwrite(text.data(), 1, text.size(), f.get()) == text.size();
  for (size_t i = 0; ok && i < bodies.size(); ++i) {
    size_t nb = bodies[i].nbytes();
    ok = nb == 0 || std::fwrite(bodies[i].raw_data(), 1, nb, f.get()) == nb;
  }
  int err = ok ? 0 : errno;
  if (std::fclose(f.release()) != 0 && ok) {
    ok = false;
    err = errno;
  }
  STRATA_CHECK(ok) << "save_safetensors: " << path << ": write failed (" << std::strerror(err) << ")";
}

// ---------------------------------------------------------------- reading

namespace {

uint64_t as_offset(const ojson& v, const std::string& path, const std::string& name, const char* what) {
  STRATA_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0))
      << "load_safetensors: " << path << ": " << what << " of tensor '" << name
      << "' must be a non-negative integer, got " << one_line(v.dump());
  return v.get<uint64_t>();
}

Entry parse_entry(const std::string& name, const ojson& e, const std::string& path, uint64_t buffer_bytes) {
  const std::string where = "load_safetensors: " + path + ": tensor '" + name + "'";
  STRATA_CHECK(e.is_object()) << where << ": entry is not an object";
  Entry out;
  out.name = name;
  auto dt = e.find("dtype");
  STRATA_CHECK(dt != e.end() && dt->is_string()) << where << ": missing or non-string \"dtype\"";
  try {
    out.dtype = dtype_from_safetensors(dt->get<std::string>());
  } catch (const Error& err) {
    STRATA_FAIL() << where << ": " << err.what();
  }
  auto sh = e.find("shape");
  STRATA_CHECK(sh != e.end() && sh->is_array()) << where << ": missing or non-array \"shape\"";
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    uint64_t v = as_offset(d, path, name, "a shape entry");
    STRATA_CHECK(v <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, v, &numel))
        << where << ": shape " << one_line(sh->dump()) << " overflows";
    out.shape.push_back(int64_t(v));
  }
  auto off = e.find("data_offsets");
  STRATA_CHECK(off != e.end() && off->is_array() && off->size() == 2)
      << where << ": \"data_offsets\" must be an array [begin, end]";
  out.begin = as_offset((*off)[0], path, name, "data_offsets");
  out.end = as_offset((*off)[1], path, name, "data_offsets");
  STRATA_CHECK(out.begin <= out.end) << where << ": data_offsets [" << out.begin << ", " << out.end
                                     << "] are reversed";
  STRATA_CHECK(out.end <= buffer_bytes) << where << ": data_offsets [" << out.begin << ", " << out.end
                                        << "] run past the " << buffer_bytes << "-byte data buffer";
  uint64_t want = 0;
  STRATA_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(out.dtype)), &want) &&
               want == out.end - out.begin)
      << where << ": shape " << shape_str(out.shape) << " of " << dt->get<std::string>() << " needs " << want
      << " bytes but data_offsets span " << (out.end - out.begin);
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  const std::string where = "load_safetensors: " + path;
  FilePtr f(std::fopen(path.c_str(), "rb"));
  STRATA_CHECK(f) << where << ": cannot open (" << std::strerror(errno) << ")";
  struct stat st;
  STRATA_CHECK(fstat(fileno(f.get()), &st) == 0 && S_ISREG(st.st_mode)) << where << ": not a regular file";
  const uint64_t file_size = uint64_t(st.st_size);
  STRATA_CHECK(file_size >= 8) << where << ": file of " << file_size << " bytes is too short for the header length";
  unsigned char len[8];
  STRATA_CHECK(std::fread(len, 1, 8, f.get()) == 8) << where << ": cannot read the header length";
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  STRATA_CHECK(n <= file_size - 8) << where << ": header length " << n << " runs past the end of the "
                                   << file_size << "-byte file";
  STRATA_CHECK(n <= kMaxHeaderBytes) << where << ": header length " << n << " exceeds the limit of "
                                     << kMaxHeaderBytes << " bytes";
  std::string text(n, '\0');
  STRATA_CHECK(n == 0 || std::fread(text.data(), 1, n, f.get()) == n) << where << ": cannot read the header";
  const uint64_t buffer_bytes = file_size - 8 - n;

  // Duplicate names would silently overwrite each other in the parsed object;
  // catch them while parsing.
  std::set<std::string> keys;
  std::string duplicate;
  auto cb = [&](int depth, ojson::parse_event_t ev, ojson& parsed) {
    if (depth == 1 && ev == ojson::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  ojson header;
  try {
    header = ojson::parse(text, cb);
  } catch (const nlohmann::json::exception& e) {
    STRATA_FAIL() << where << ": bad JSON header (" << one_line(e.what()) << ")";
  }
  STRATA_CHECK(duplicate.empty()) << where << ": tensor '" << duplicate << "' appears twice in the header";
  STRATA_CHECK(header.is_object()) << where << ": header is not a JSON object";

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      STRATA_CHECK(it->is_object()) << where << ": \"__metadata__\" is not an object";
      for (auto m = it->begin(); m != it->end(); ++m) {
        STRATA_CHECK(m->is_string()) << where << ": metadata '" << m.key() << "' is not a string";
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), *it, path, buffer_bytes));
  }

  // The format has no holes: sorted by offset, each tensor starts where the
  // previous one ended and the last one ends at the end of the file.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t pos = 0;
  for (const Entry& e : entries) {
    STRATA_CHECK(e.begin >= pos) << where << ": tensor '" << e.name << "' at [" << e.begin << ", " << e.end
                                 << ") overlaps the previous tensor ending at " << pos;
    STRATA_CHECK(e.begin == pos) << where << ": gap of " << (e.begin - pos) << " bytes before tensor '" << e.name
                                 << "'";
    pos = e.end;
  }
  STRATA_CHECK(pos == buffer_bytes) << where << ": " << (buffer_bytes - pos)
                                    << " bytes after the last tensor are not described by the header";

  out.tensors.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    size_t nb = t.nbytes();
    STRATA_CHECK(nb == 0 || std::fread(t.raw_data(), 1, nb, f.get()) == nb)
        << where << ": file ended while reading tensor '" << e.name << "'";
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace strata::train
