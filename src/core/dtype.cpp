#include "strata/core/dtype.h"

#include "strata/core/error.h"

namespace strata {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  if (n == "f32" || n == "float32" || n == "fp32") return DType::F32;
  if (n == "f64" || n == "float64" || n == "fp64") return DType::F64;
  if (n == "f16" || n == "float16" || n == "fp16") return DType::F16;
  if (n == "bf16" || n == "bfloat16") return DType::BF16;
  if (n == "i32" || n == "int32") return DType::I32;
  if (n == "i64" || n == "int64") return DType::I64;
  STRATA_FAIL() << "unknown dtype '" << n << "' (expected one of f32, f64, f16, bf16, i32, i64)";
  return DType::F32;
}

}  // namespace strata
