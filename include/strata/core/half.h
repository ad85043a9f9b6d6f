// 16-bit float storage types with round-to-nearest-even conversion from f32.
// Bit-exact with IEEE binary16 and with the bfloat16 of PyTorch/CUDA.
#pragma once
#include <cstdint>
#include <cstring>

#include "strata/core/hostdevice.h"

namespace strata {

STRATA_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
STRATA_HD float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  STRATA_HD explicit BFloat16(float f) : bits(from_float(f)) {}
  STRATA_HD explicit operator float() const { return bits_f32(uint32_t(bits) << 16); }
  STRATA_HD static uint16_t from_float(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);                           // nearest even
    return uint16_t((u + rounding) >> 16);
  }
};

struct Half {
  uint16_t bits = 0;
  Half() = default;
  STRATA_HD explicit Half(float f) : bits(from_float(f)) {}
  STRATA_HD explicit operator float() const { return to_float(bits); }

  STRATA_HD static uint16_t from_float(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf (incl. rounding up)
    if (a < 0x38800000u) {                                  // subnormal or zero in f16
      // value * 2^24 rounded to nearest even gives the subnormal mantissa
      float v = bits_f32(a) * 16777216.0f;
      uint32_t m = uint32_t(v);
      float rem = v - float(m);
      if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
      return uint16_t(sign | m);
    }
    uint32_t exp = ((a >> 23) - 112u) << 10;  // rebias 127 -> 15
    uint32_t mant = a & 0x7fffffu;
    uint32_t h = exp | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: correct
    return uint16_t(sign | h);
  }
  STRATA_HD static float to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
      float v = float(mant) * (1.0f / 16777216.0f);
      return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

}  // namespace strata
