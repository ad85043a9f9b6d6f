// Element types. f32 is the working type, f64 exists for gradient checks,
// f16/bf16 are storage types (conversion only on CPU), i32/i64 hold indices.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "strata/core/half.h"

namespace strata {

enum class DType : uint8_t { F32, F64, F16, BF16, I32, I64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// Parses "f32", "float32", "bf16", ...; throws strata::Error on anything else.
DType dtype_from_name(const std::string& name);
inline bool is_floating(DType t) { return t != DType::I32 && t != DType::I64; }
inline bool is_integer(DType t) { return !is_floating(t); }

// Maps a C++ type to its DType (used by Tensor::data<T>() checks).
template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<Half> { static constexpr DType value = DType::F16; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::BF16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };

}  // namespace strata
