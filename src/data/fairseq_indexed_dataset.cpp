#include "strata/data/fairseq_indexed_dataset.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "strata/core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the dataset formats are little-endian");

namespace strata::data {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr char kLegacyMagic[8] = {'T', 'N', 'T', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeader = 9 + 8 + 1 + 8;  // magic, version, dtype, count

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Element `k` of a buffer of fairseq dtype `code`, widened to i64 (u64 above 2^63 saturates,
// which the caller rejects as out of range anyway).
int64_t load_elem(const uint8_t* p, uint8_t code) {
  switch (code) {
    case 1: return load<uint8_t>(p);
    case 2: return load<int8_t>(p);
    case 3: return load<int16_t>(p);
    case 4: return load<int32_t>(p);
    case 5: return load<int64_t>(p);
    case 8: return load<uint16_t>(p);
    case 9: return load<uint32_t>(p);
    case 10: {
      uint64_t v = load<uint64_t>(p);
      return v > uint64_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max() : int64_t(v);
    }
  }
  return 0;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

size_t fairseq_dtype_size(uint8_t code) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 9: return 4;
    case 5: case 6: case 7: case 10: return 8;
  }
  return 0;
}

const char* fairseq_dtype_name(uint8_t code) {
  static const char* names[] = {"unknown", "uint8",  "int8",   "int16",  "int32", "int64",
                                "float",   "double", "uint16", "uint32", "uint64"};
  return code <= 10 ? names[code] : names[0];
}

bool fairseq_dtype_is_integer(uint8_t code) { return fairseq_dtype_size(code) != 0 && code != 6 && code != 7; }

uint8_t fairseq_dtype_for_vocab(int64_t vocab_size) { return vocab_size < 65500 ? 8 : 9; }

bool fairseq_dataset_exists(const std::string& prefix) {
  return file_exists(prefix + ".idx") && file_exists(prefix + ".bin");
}

std::shared_ptr<FairseqIndexedDataset> FairseqIndexedDataset::open(const std::string& prefix) {
  MappedFile idx(prefix + ".idx");
  MappedFile bin(prefix + ".bin");
  std::shared_ptr<FairseqIndexedDataset> ds(new FairseqIndexedDataset(std::move(idx), std::move(bin)));
  ds->validate();
  return ds;
}

int32_t FairseqIndexedDataset::size_at(size_t i) const { return load<int32_t>(idx_.data() + sizes_at_ + 4 * i); }

int64_t FairseqIndexedDataset::pointer_at(size_t i) const {
  return load<int64_t>(idx_.data() + pointers_at_ + 8 * i);
}

#define CORRUPT(file, at) STRATA_FAIL() << (file) << ": offset " << (at) << ": "

void FairseqIndexedDataset::validate() {
  const std::string& path = idx_.path();
  const uint8_t* p = idx_.data();
  const size_t size = idx_.size();
  if (size >= 8 && std::memcmp(p, kLegacyMagic, 8) == 0)
    CORRUPT(path, 0) << "legacy fairseq IndexedDataset (TNTIDX, --dataset-impl lazy/cached) is not supported; "
                        "re-binarise with --dataset-impl mmap";
  if (size < kHeader) CORRUPT(path, size) << "index is " << size << " bytes, shorter than its " << kHeader << "-byte header";
  if (std::memcmp(p, kMagic, 9) != 0)
    CORRUPT(path, 0) << "bad magic (expected \"MMIDIDX\\0\\0\": not a fairseq mmap index)";
  uint64_t version = load<uint64_t>(p + 9);
  if (version != 1) CORRUPT(path, 9) << "unsupported version " << version << " (expected 1)";
  code_ = p[17];
  elem_ = fairseq_dtype_size(code_);
  if (elem_ == 0) CORRUPT(path, 17) << "unknown dtype code " << int(code_);
  if (!fairseq_dtype_is_integer(code_))
    CORRUPT(path, 17) << "dtype code " << int(code_) << " (" << fairseq_dtype_name(code_)
                      << ") is floating point and holds no token ids";
  count_ = load<uint64_t>(p + 18);
  if (count_ > size / 12)
    CORRUPT(path, 18) << "count " << count_ << " needs more than the " << size << " bytes of the index (truncated?)";
  // fairseq: header, sizes, pointers. Megatron: header, doc_count, sizes, pointers, doc_idx.
  uint64_t doc_count = 0;
  if (size == kHeader + 12 * count_) {
    sizes_at_ = kHeader;
  } else {
    if (size < kHeader + 8)
      CORRUPT(path, size) << "index is " << size << " bytes, " << count_ << " sentences need " << kHeader + 12 * count_
                          << " (truncated)";
    doc_count = load<uint64_t>(p + kHeader);
    uint64_t megatron = doc_count <= size / 8 ? kHeader + 8 + 12 * count_ + 8 * doc_count : 0;
    if (size != megatron)
      CORRUPT(path, std::min<uint64_t>(size, kHeader + 12 * count_))
          << "index is " << size << " bytes, " << count_ << " sentences need " << kHeader + 12 * count_
          << " (fairseq layout) or " << kHeader + 8 + 12 * count_ << " + 8 per document (Megatron layout)"
          << (size < kHeader + 12 * count_ ? ": truncated" : ": trailing or missing bytes");
    sizes_at_ = kHeader + 8;
  }
  pointers_at_ = sizes_at_ + 4 * count_;
  const uint64_t bin_size = bin_.size();
  ntokens_ = 0;
  for (size_t i = 0; i < count_; ++i) {
    int32_t s = size_at(i);
    int64_t ptr = pointer_at(i);
    if (s < 0) CORRUPT(path, sizes_at_ + 4 * i) << "sentence " << i << " has negative size " << s;
    if (ptr < 0 || uint64_t(ptr) > bin_size || (bin_size - uint64_t(ptr)) / elem_ < uint64_t(s))
      CORRUPT(path, pointers_at_ + 8 * i) << "sentence " << i << " (" << s << " " << fairseq_dtype_name(code_)
                                          << " at byte " << ptr << ") lies outside " << bin_.path() << " ("
                                          << bin_size << " bytes)";
    ntokens_ += uint64_t(s);
  }
  doc_idx_.clear();
  const size_t doc_at = pointers_at_ + 8 * count_;
  for (size_t d = 0; d < doc_count; ++d) {
    int64_t v = load<int64_t>(p + doc_at + 8 * d);
    if (v < 0 || uint64_t(v) > count_ || (d > 0 && v < doc_idx_.back()))
      CORRUPT(path, doc_at + 8 * d) << "doc_idx[" << d << "] = " << v << " is not a non-decreasing sentence index in [0, "
                                    << count_ << "]";
    doc_idx_.push_back(v);
  }
}

int64_t FairseqIndexedDataset::length(size_t i) const {
  check_index(i, "fairseq dataset");
  return size_at(i);
}

void FairseqIndexedDataset::get(size_t i, std::vector<int32_t>& out) const {
  check_index(i, "fairseq dataset");
  const size_t n = size_t(size_at(i));
  const uint64_t ptr = uint64_t(pointer_at(i));
  const uint8_t* base = bin_.data() + ptr;
  out.resize(n);
  if (code_ == 4) {  // the common int32 case needs no per-element work beyond the range check
    if (n) std::memcpy(out.data(), base, n * 4);
    for (size_t k = 0; k < n; ++k)
      if (out[k] < 0) CORRUPT(bin_.path(), ptr + 4 * k) << "token id " << out[k] << " of sentence " << i << " is negative";
    return;
  }
  for (size_t k = 0; k < n; ++k) {
    int64_t v = load_elem(base + k * elem_, code_);
    if (v < 0 || v > std::numeric_limits<int32_t>::max())
      CORRUPT(bin_.path(), ptr + elem_ * k) << "token id " << v << " of sentence " << i << " is not a valid id";
    out[k] = int32_t(v);
  }
}
#undef CORRUPT

void write_fairseq_indexed_dataset(const std::string& prefix, const std::vector<std::vector<int32_t>>& sentences,
                                   uint8_t code, bool with_doc_index) {
  STRATA_CHECK(fairseq_dtype_is_integer(code)) << "fairseq dataset writer: dtype code " << int(code)
                                               << " is not an integer type";
  const size_t w = fairseq_dtype_size(code);
  std::vector<uint8_t> bin, idx;
  std::vector<int32_t> sizes;
  std::vector<int64_t> pointers;
  for (const auto& s : sentences) {
    pointers.push_back(int64_t(bin.size()));
    sizes.push_back(int32_t(s.size()));
    for (int32_t id : s) {
      uint8_t b[8] = {};
      int64_t v = id;
      bool fits = true;
      switch (code) {
        case 1: fits = v >= 0 && v <= 255; break;
        case 2: fits = v >= -128 && v <= 127; break;
        case 3: fits = v >= -32768 && v <= 32767; break;
        case 8: fits = v >= 0 && v <= 65535; break;
        case 9: case 10: fits = v >= 0; break;
      }
      STRATA_CHECK(fits) << "fairseq dataset writer: id " << id << " does not fit " << fairseq_dtype_name(code);
      std::memcpy(b, &v, w);  // little-endian: the low bytes hold the value (two's complement)
      bin.insert(bin.end(), b, b + w);
    }
  }
  auto put = [&idx](const void* q, size_t n) {
    const auto* c = static_cast<const uint8_t*>(q);
    idx.insert(idx.end(), c, c + n);
  };
  uint64_t version = 1, count = sizes.size();
  put(kMagic, 9);
  put(&version, 8);
  put(&code, 1);
  put(&count, 8);
  std::vector<int64_t> doc_idx = {0, int64_t(count)};
  if (with_doc_index) {
    uint64_t dc = doc_idx.size();
    put(&dc, 8);
  }
  put(sizes.data(), sizes.size() * 4);
  put(pointers.data(), pointers.size() * 8);
  if (with_doc_index) put(doc_idx.data(), doc_idx.size() * 8);
  for (auto [path, data] : {std::make_pair(prefix + ".bin", &bin), std::make_pair(prefix + ".idx", &idx)}) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    STRATA_CHECK(f != nullptr) << path << ": cannot create: " << std::strerror(errno);
    bool ok = data->empty() || std::fwrite(data->data(), 1, data->size(), f) == data->size();
    ok = (std::fclose(f) == 0) && ok;
    STRATA_CHECK(ok) << path << ": write failed";
  }
}

}  // namespace strata::data
