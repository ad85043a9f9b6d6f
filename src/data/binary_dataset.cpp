#include "strata/data/binary_dataset.h"

#include <cerrno>
#include <cstring>

#include "strata/core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the dataset formats are little-endian");

namespace strata::data {

const char* token_dtype_name(TokenDType t) {
  switch (t) {
    case TokenDType::U16: return "u16";
    case TokenDType::I32: return "i32";
  }
  return "?";
}

size_t token_dtype_size(TokenDType t) { return t == TokenDType::U16 ? 2 : 4; }

TokenDType token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDType::U16 : TokenDType::I32;
}

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

namespace {

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

void write_all(std::FILE* f, const void* p, size_t n, const std::string& path) {
  STRATA_CHECK(n == 0 || std::fwrite(p, 1, n, f) == n) << path << ": write failed: " << std::strerror(errno);
}

}  // namespace

// ---------------------------------------------------------------- writer

BinaryDatasetWriter::BinaryDatasetWriter(const std::string& path, TokenDType dtype, int32_t vocab_size)
    : path_(path), tokens_path_(path + ".tmp.tokens"), dtype_(dtype), vocab_size_(vocab_size) {
  STRATA_CHECK(vocab_size > 0) << "binary dataset " << path << ": vocab_size must be positive, got " << vocab_size;
  STRATA_CHECK(dtype == TokenDType::I32 || vocab_size <= 65536)
      << "binary dataset " << path << ": u16 ids cannot hold a vocabulary of " << vocab_size;
  tokens_ = std::fopen(tokens_path_.c_str(), "wb+");
  STRATA_CHECK(tokens_ != nullptr) << tokens_path_ << ": cannot create: " << std::strerror(errno);
}

BinaryDatasetWriter::~BinaryDatasetWriter() {
  if (tokens_) std::fclose(tokens_);
  if (!finished_) {
    std::remove(tokens_path_.c_str());
    std::remove((path_ + ".tmp").c_str());
  }
}

void BinaryDatasetWriter::add(const std::vector<int32_t>& ids) {
  STRATA_CHECK(!finished_) << "binary dataset " << path_ << ": add after finish";
  size_t w = token_dtype_size(dtype_);
  buf_.resize(ids.size() * w);
  for (size_t k = 0; k < ids.size(); ++k) {
    int32_t id = ids[k];
    STRATA_CHECK(id >= 0 && id < vocab_size_) << "binary dataset " << path_ << ": id " << id << " of sentence "
                                              << size() << " outside [0, " << vocab_size_ << ")";
    if (dtype_ == TokenDType::U16)
      store(buf_.data() + k * w, uint16_t(id));
    else
      store(buf_.data() + k * w, id);
  }
  write_all(tokens_, buf_.data(), buf_.size(), tokens_path_);
  tokens_hash_ = fnv1a64(buf_.data(), buf_.size(), tokens_hash_);
  offsets_.push_back(offsets_.back() + ids.size());
}

void BinaryDatasetWriter::finish() {
  STRATA_CHECK(!finished_) << "binary dataset " << path_ << ": finish called twice";
  std::string tmp = path_ + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  STRATA_CHECK(out != nullptr) << tmp << ": cannot create: " << std::strerror(errno);
  try {
    const size_t offsets_bytes = offsets_.size() * sizeof(uint64_t);
    uint8_t h[kBinaryHeaderSize] = {};
    std::memcpy(h, kBinaryMagic, 8);
    store<uint32_t>(h + 8, kBinaryVersion);
    store<uint32_t>(h + 12, uint32_t(dtype_));
    store<uint64_t>(h + 16, uint64_t(size()));
    store<uint64_t>(h + 24, num_tokens());
    store<uint32_t>(h + 32, uint32_t(vocab_size_));
    store<uint64_t>(h + 40, fnv1a64(offsets_.data(), offsets_bytes));
    store<uint64_t>(h + 48, tokens_hash_);
    write_all(out, h, sizeof h, tmp);
    write_all(out, offsets_.data(), offsets_bytes, tmp);
    STRATA_CHECK(std::fflush(tokens_) == 0 && std::fseek(tokens_, 0, SEEK_SET) == 0)
        << tokens_path_ << ": cannot rewind: " << std::strerror(errno);
    std::vector<uint8_t> chunk(1 << 20);
    size_t n;
    while ((n = std::fread(chunk.data(), 1, chunk.size(), tokens_)) > 0) write_all(out, chunk.data(), n, tmp);
    STRATA_CHECK(!std::ferror(tokens_)) << tokens_path_ << ": read failed";
    STRATA_CHECK(std::fclose(out) == 0) << tmp << ": close failed: " << std::strerror(errno);
    out = nullptr;
  } catch (...) {
    if (out) std::fclose(out);
    throw;
  }
  std::fclose(tokens_);
  tokens_ = nullptr;
  std::remove(tokens_path_.c_str());
  STRATA_CHECK(std::rename(tmp.c_str(), path_.c_str()) == 0)
      << "binary dataset: cannot rename " << tmp << " to " << path_ << ": " << std::strerror(errno);
  finished_ = true;
}

void write_binary_dataset(const std::string& path, const std::vector<std::vector<int32_t>>& sentences,
                          TokenDType dtype, int32_t vocab_size) {
  BinaryDatasetWriter w(path, dtype, vocab_size);
  for (const auto& s : sentences) w.add(s);
  w.finish();
}

// ---------------------------------------------------------------- reader

std::shared_ptr<BinaryDataset> BinaryDataset::open(const std::string& path) { return open(path, Options()); }

std::shared_ptr<BinaryDataset> BinaryDataset::open(const std::string& path, Options opt) {
  std::shared_ptr<BinaryDataset> ds(new BinaryDataset(MappedFile(path)));
  ds->validate(opt);
  return ds;
}

uint64_t BinaryDataset::offset(size_t i) const {
  return load<uint64_t>(file_.data() + kBinaryHeaderSize + i * sizeof(uint64_t));
}

// Every check names the byte offset of the field it found wrong.
#define CORRUPT(at) STRATA_FAIL() << path << ": offset " << (at) << ": "

void BinaryDataset::validate(const Options& opt) {
  const std::string& path = file_.path();
  const uint8_t* p = file_.data();
  const size_t size = file_.size();
  if (size < kBinaryHeaderSize)
    CORRUPT(size) << "file is " << size << " bytes, shorter than the " << kBinaryHeaderSize
                  << "-byte header (truncated, or not a Strata dataset)";
  if (std::memcmp(p, kBinaryMagic, 8) != 0)
    CORRUPT(0) << "bad magic (expected \"" << kBinaryMagic << "\": not a Strata token dataset)";
  uint32_t version = load<uint32_t>(p + 8);
  if (version != kBinaryVersion) CORRUPT(8) << "unsupported version " << version << " (this build reads " << kBinaryVersion << ")";
  uint32_t dt = load<uint32_t>(p + 12);
  if (dt != uint32_t(TokenDType::U16) && dt != uint32_t(TokenDType::I32))
    CORRUPT(12) << "unknown dtype code " << dt << " (1 = u16, 2 = i32)";
  dtype_ = TokenDType(dt);
  count_ = load<uint64_t>(p + 16);
  ntokens_ = load<uint64_t>(p + 24);
  uint32_t vocab = load<uint32_t>(p + 32);
  if (vocab == 0 || vocab > uint32_t(INT32_MAX)) CORRUPT(32) << "bad vocab_size " << vocab;
  if (dtype_ == TokenDType::U16 && vocab > 65536) CORRUPT(32) << "vocab_size " << vocab << " does not fit u16 ids";
  vocab_size_ = int32_t(vocab);
  if (load<uint32_t>(p + 36) != 0 || load<uint64_t>(p + 56) != 0) CORRUPT(36) << "reserved header fields are not zero";
  const size_t w = token_dtype_size(dtype_);
  // Sizes derived from the header must match the file exactly; guard the products against overflow first.
  if (count_ >= size / 8 || ntokens_ > size / w)
    CORRUPT(16) << "header claims " << count_ << " sentences and " << ntokens_ << " tokens, more than a "
                << size << "-byte file can hold (truncated?)";
  tokens_at_ = kBinaryHeaderSize + (count_ + 1) * 8;
  const size_t expected = tokens_at_ + ntokens_ * w;
  if (expected != size)
    CORRUPT(size < expected ? size : expected)
        << "file is " << size << " bytes, the header (" << count_ << " sentences, " << ntokens_ << " "
        << token_dtype_name(dtype_) << " tokens) needs exactly " << expected << (size < expected ? " (truncated)" : " (trailing bytes)");
  if (offset(0) != 0) CORRUPT(kBinaryHeaderSize) << "offsets[0] is " << offset(0) << ", must be 0";
  for (size_t i = 1; i <= count_; ++i) {
    uint64_t a = offset(i - 1), b = offset(i);
    if (b < a || b > ntokens_)
      CORRUPT(kBinaryHeaderSize + i * 8) << "offsets[" << i << "] = " << b << " out of range [" << a << ", "
                                         << ntokens_ << "] (sentence " << i - 1 << ")";
  }
  if (offset(count_) != ntokens_)
    CORRUPT(kBinaryHeaderSize + count_ * 8) << "last offset " << offset(count_) << " differs from ntokens " << ntokens_;
  if (!opt.verify_contents) return;
  uint64_t h_off = fnv1a64(p + kBinaryHeaderSize, (count_ + 1) * 8);
  if (h_off != load<uint64_t>(p + 40))
    CORRUPT(kBinaryHeaderSize) << "offsets section checksum mismatch (corrupt data)";
  uint64_t h_tok = fnv1a64(p + tokens_at_, ntokens_ * w);
  if (h_tok != load<uint64_t>(p + 48)) CORRUPT(tokens_at_) << "token section checksum mismatch (corrupt data)";
  for (uint64_t k = 0; k < ntokens_; ++k) {
    int64_t id = w == 2 ? int64_t(load<uint16_t>(p + tokens_at_ + k * 2)) : int64_t(load<int32_t>(p + tokens_at_ + k * 4));
    if (id < 0 || id >= vocab_size_)
      CORRUPT(tokens_at_ + k * w) << "token id " << id << " outside [0, " << vocab_size_ << ")";
  }
}
#undef CORRUPT

int64_t BinaryDataset::length(size_t i) const {
  check_index(i, "binary dataset");
  return int64_t(offset(i + 1) - offset(i));
}

void BinaryDataset::get(size_t i, std::vector<int32_t>& out) const {
  check_index(i, "binary dataset");
  uint64_t a = offset(i), b = offset(i + 1);
  out.resize(size_t(b - a));
  const uint8_t* base = file_.data() + tokens_at_;
  if (dtype_ == TokenDType::I32) {
    if (!out.empty()) std::memcpy(out.data(), base + a * 4, out.size() * 4);
  } else {
    for (size_t k = 0; k < out.size(); ++k) out[k] = load<uint16_t>(base + (a + k) * 2);
  }
}

}  // namespace strata::data
