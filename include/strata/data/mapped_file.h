// A whole file mapped read-only into memory (POSIX mmap). Datasets keep one
// per file: the OS pages token ids in on demand and shares them between the
// processes of one node, so a large corpus costs no heap memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace strata::data {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path`; throws strata::Error "<path>: ..." when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;  // nullptr for an empty file
  size_t size_ = 0;
};

}  // namespace strata::data
