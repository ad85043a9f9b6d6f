// Reading and writing the Hugging Face safetensors format, which checkpoints
// use for weights and optimizer state:
//   u64 little-endian N | N bytes of JSON header (space-padded to a multiple
//   of 8) | raw little-endian tensor bytes.
// The header maps each name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the start of the byte buffer) and may hold a
// "__metadata__" object of string -> string.
// Writing is deterministic: tensors are stored contiguously in the order given
// and the header lists "__metadata__" first, then the tensors in that order.
// Reading validates everything and reports the file and the tensor at fault.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::train {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

// Contents of a safetensors file; tensors keep the order of their bytes in the file.
struct SafetensorsFile {
  NamedTensors tensors;
  Metadata metadata;

  bool contains(const std::string& name) const;
  // The tensor called `name`; throws naming the file's tensor count when absent.
  const Tensor& at(const std::string& name) const;
};

// safetensors dtype strings: "F32", "F64", "F16", "BF16", "I32", "I64".
const char* safetensors_dtype(DType t);
// Throws for any other string (U8, BOOL, F8_E4M3, ... are valid safetensors but unsupported here).
DType dtype_from_safetensors(const std::string& name);

// Writes `tensors` (CPU, any layout) to `path`, replacing the file. Names must be
// unique, non-empty and not "__metadata__". Neither fsynced nor atomic on its own:
// checkpoints write through CheckpointWriter, which provides both.
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});
// A map is written in key order. (A template so that a braced list of pairs
// picks the NamedTensors overload above instead of being ambiguous.)
template <class Compare, class Alloc>
void save_safetensors(const std::string& path, const std::map<std::string, Tensor, Compare, Alloc>& tensors,
                      const Metadata& metadata = {}) {
  save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

// Reads and validates the whole file. Every failure throws strata::Error with a
// one-line message "load_safetensors: <path>: <what> [tensor '<name>']".
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace strata::train
