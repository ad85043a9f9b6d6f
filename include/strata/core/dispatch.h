// Runs a generic lambda with the C++ type that matches a runtime DType:
//   dispatch_dtype(t.dtype(), "op", [&](auto tag) { using T = typename decltype(tag)::type; ... });
// The *_float variant accepts f32/f64 only and names the op when given another dtype.
#pragma once
#include "strata/core/dtype.h"
#include "strata/core/error.h"

namespace strata {

template <class T>
struct TypeTag {
  using type = T;
};

// Widens a stored value to the type arithmetic is done in (f16/bf16 -> float).
template <class T> inline auto to_compute(T v) { return v; }
inline float to_compute(Half v) { return float(v); }
inline float to_compute(BFloat16 v) { return float(v); }
// Narrows a computed value back to the storage type.
template <class T, class V> inline T from_compute(V v) { return T(v); }
template <> inline Half from_compute<Half, float>(float v) { return Half(v); }
template <> inline Half from_compute<Half, double>(double v) { return Half(float(v)); }
template <> inline BFloat16 from_compute<BFloat16, float>(float v) { return BFloat16(v); }
template <> inline BFloat16 from_compute<BFloat16, double>(double v) { return BFloat16(float(v)); }

template <class Fn>
decltype(auto) dispatch_dtype(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::F64: return fn(TypeTag<double>{});
    case DType::F16: return fn(TypeTag<Half>{});
    case DType::BF16: return fn(TypeTag<BFloat16>{});
    case DType::I32: return fn(TypeTag<int32_t>{});
    case DType::I64: return fn(TypeTag<int64_t>{});
  }
  STRATA_FAIL() << op << ": unsupported dtype";
  return fn(TypeTag<float>{});
}

template <class Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::F64: return fn(TypeTag<double>{});
    default: break;
  }
  STRATA_FAIL() << op << ": expected a f32 or f64 tensor, got " << dtype_name(t);
  return fn(TypeTag<float>{});
}

// Every floating dtype: f32, f64 and the 16-bit storage types (the GPU
// kernels take all four; arithmetic on f16/bf16 widens to f32).
template <class Fn>
decltype(auto) dispatch_floating(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(TypeTag<float>{});
    case DType::F64: return fn(TypeTag<double>{});
    case DType::F16: return fn(TypeTag<Half>{});
    case DType::BF16: return fn(TypeTag<BFloat16>{});
    default: break;
  }
  STRATA_FAIL() << op << ": expected f32, f64, f16 or bf16, got " << dtype_name(t);
  return fn(TypeTag<float>{});
}

template <class Fn>
decltype(auto) dispatch_index(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::I32: return fn(TypeTag<int32_t>{});
    case DType::I64: return fn(TypeTag<int64_t>{});
    default: break;
  }
  STRATA_FAIL() << op << ": expected an i32 or i64 index tensor, got " << dtype_name(t);
  return fn(TypeTag<int64_t>{});
}

}  // namespace strata
