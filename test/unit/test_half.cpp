#include <cmath>
#include <limits>

#include "strata/core/half.h"
#include "test_util.h"

using namespace strata;

TEST_CASE("bf16 conversion rounds to nearest even and keeps specials", "[half]") {
  CHECK(BFloat16(1.0f).bits == 0x3f80);
  CHECK(float(BFloat16(1.0f)) == 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1+2^-7: ties to even -> 1
  CHECK(float(BFloat16(1.00390625f)) == 1.0f);
  // 1 + 3*2^-8 lies halfway between 1+2^-7 and 1+2^-6: ties to even -> 1+2^-6
  CHECK(float(BFloat16(1.01171875f)) == 1.015625f);
  CHECK(float(BFloat16(-0.0f)) == 0.0f);
  CHECK(std::signbit(float(BFloat16(-0.0f))));
  CHECK(std::isinf(float(BFloat16(std::numeric_limits<float>::infinity()))));
  CHECK(std::isnan(float(BFloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(float(BFloat16(3.4e38f))));  // rounds past the largest bf16
}

TEST_CASE("f16 conversion matches IEEE binary16", "[half]") {
  CHECK(Half(1.0f).bits == 0x3c00);
  CHECK(Half(-2.0f).bits == 0xc000);
  CHECK(Half(65504.0f).bits == 0x7bff);                 // largest normal
  CHECK(Half(65520.0f).bits == 0x7c00);                 // rounds to inf
  CHECK(Half(6.103515625e-05f).bits == 0x0400);         // smallest normal
  CHECK(Half(5.9604644775390625e-08f).bits == 0x0001);  // smallest subnormal
  CHECK(Half(2.98e-08f).bits == 0x0000);                // below half of it -> 0
  CHECK(Half(1.0f + 1.0f / 2048).bits == 0x3c00);       // tie -> even
  CHECK(Half(1.0f + 3.0f / 2048).bits == 0x3c02);       // tie -> even (up)
  CHECK(std::isnan(float(Half(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(float(Half(0.333251953125f)) == 0.333251953125f);
}

TEST_CASE("every f16 bit pattern survives a round trip through f32", "[half]") {
  int bad = 0;
  for (uint32_t b = 0; b < 0x10000; ++b) {
    uint16_t h = uint16_t(b);
    float f = Half::to_float(h);
    if (std::isnan(f)) continue;
    bad += Half::from_float(f) != h;
  }
  CHECK(bad == 0);
}

TEST_CASE("every bf16 bit pattern survives a round trip through f32", "[half]") {
  int bad = 0;
  for (uint32_t b = 0; b < 0x10000; ++b) {
    BFloat16 x;
    x.bits = uint16_t(b);
    float f = float(x);
    if (std::isnan(f)) continue;
    bad += BFloat16(f).bits != x.bits;
  }
  CHECK(bad == 0);
}

TEST_CASE("16-bit storage keeps values within its precision", "[half]") {
  Tensor x = test::rand({1000}, 5, DType::F32, -100, 100);
  test::require_close(x.to(DType::F16).to(DType::F32), x, 1e-3, 1e-3);
  test::require_close(x.to(DType::BF16).to(DType::F32), x, 8e-3, 1e-3);
}
