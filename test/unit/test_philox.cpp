#include <cmath>
#include <algorithm>

#include "strata/core/philox.h"
#include "test_util.h"

using namespace strata;

TEST_CASE("Philox-4x32-10 matches the Random123 known-answer vectors", "[rng]") {
  // Vectors from Random123's kat_vectors (philox4x32 with 10 rounds).
  Philox4x32 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  Philox4x32 b = philox4x32_10(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[1] == 0x41c83b0eu);
  CHECK(b.v[2] == 0xa20bc7c6u);
  CHECK(b.v[3] == 0x6d5451fdu);
  Philox4x32 c = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdccebu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);
}

TEST_CASE("the same (seed, offset) gives the same stream and others differ", "[rng]") {
  PhiloxStream s1{42, 7}, s2{42, 7}, other_offset{42, 8}, other_seed{43, 7};
  int diff_offset = 0, diff_seed = 0;
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same += s1.u32(i) == s2.u32(i);
    diff_offset += s1.u32(i) != other_offset.u32(i);
    diff_seed += s1.u32(i) != other_seed.u32(i);
  }
  CHECK(same == 1000);
  CHECK(diff_offset > 990);
  CHECK(diff_seed > 990);
  // random access equals sequential access: element i depends only on i
  CHECK(s1.uniform(999) == PhiloxStream{42, 7}.uniform(999));
}

TEST_CASE("uniform draws lie in [0,1) with the moments of U(0,1)", "[rng]") {
  auto seed = GENERATE(1u, 2u, 99u);
  PhiloxStream s{seed, 3};
  const int n = 200000;
  double sum = 0, sq = 0, mn = 1, mx = 0;
  for (int i = 0; i < n; ++i) {
    double u = s.uniform(uint64_t(i));
    sum += u;
    sq += u * u;
    mn = std::min(mn, u);
    mx = std::max(mx, u);
  }
  double mean = sum / n, var = sq / n - mean * mean;
  CHECK(std::fabs(mean - 0.5) < 0.005);
  CHECK(std::fabs(var - 1.0 / 12) < 0.002);
  CHECK(mn >= 0.0);
  CHECK(mx < 1.0);
  CHECK(mn < 1e-3);
  CHECK(mx > 1 - 1e-3);
}

TEST_CASE("normal draws have mean 0, variance 1 and normal tails", "[rng]") {
  auto seed = GENERATE(5u, 6u);
  PhiloxStream s{seed, 0};
  const int n = 200000;
  double sum = 0, sq = 0, q = 0;
  int beyond2 = 0, nonfinite = 0;
  for (int i = 0; i < n; ++i) {
    double z = s.normal(uint64_t(i));
    nonfinite += !std::isfinite(z);
    sum += z;
    sq += z * z;
    q += z * z * z * z;
    beyond2 += std::fabs(z) > 2;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  CHECK(nonfinite == 0);
  CHECK(std::fabs(mean) < 0.01);
  CHECK(std::fabs(var - 1) < 0.015);
  CHECK(std::fabs(q / n - 3) < 0.1);                   // kurtosis of N(0,1)
  CHECK(std::fabs(double(beyond2) / n - 0.0455) < 0.003);  // P(|z|>2)
}

TEST_CASE("bernoulli masks keep the requested fraction", "[rng]") {
  auto p = GENERATE(0.1f, 0.5f, 0.9f);
  PhiloxStream s{11, 2};
  const int n = 100000;
  int hits = 0;
  for (int i = 0; i < n; ++i) hits += s.bernoulli(uint64_t(i), p);
  CHECK(std::fabs(double(hits) / n - p) < 0.006);
  CHECK(PhiloxStream{11, 2}.bernoulli(0, 0.0f) == false);
  CHECK(PhiloxStream{11, 2}.bernoulli(0, 1.0f) == true);
}

TEST_CASE("Gumbel draws have the Gumbel(0,1) mean and variance", "[rng]") {
  PhiloxStream s{21, 0};
  const int n = 200000;
  double sum = 0, sq = 0;
  int nonfinite = 0;
  for (int i = 0; i < n; ++i) {
    double g = s.gumbel(uint64_t(i));
    nonfinite += !std::isfinite(g);
    sum += g;
    sq += g * g;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  CHECK(nonfinite == 0);
  CHECK(std::fabs(mean - 0.5772156649) < 0.01);   // Euler-Mascheroni
  CHECK(std::fabs(var - 1.6449340668) < 0.03);    // pi^2/6
}

TEST_CASE("a generator hands out distinct offsets and restores its state", "[rng]") {
  Generator g(7);
  PhiloxStream a = g.next_stream(), b = g.next_stream();
  CHECK(a.offset != b.offset);
  CHECK(a.seed == 7);
  Generator h(0);
  h.set_state(g.seed(), g.next_offset());
  CHECK(h.next_stream().offset == g.next_stream().offset);
  CHECK(mix_keys(1, 2) != mix_keys(2, 1));
  CHECK(mix_keys(1, 2) == mix_keys(1, 2));
}

TEST_CASE("random tensors are reproducible from (seed, offset)", "[rng]") {
  Tensor a = Tensor::normal({7, 13}, 3, 1), b = Tensor::normal({7, 13}, 3, 1), c = Tensor::normal({7, 13}, 3, 2);
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  CHECK(a.to_vector<float>() != c.to_vector<float>());
  Tensor u = Tensor::uniform({1000}, 9, 0, -2.0, 3.0);
  std::vector<float> uv = u.to_vector<float>();
  CHECK(*std::min_element(uv.begin(), uv.end()) >= -2.0f);
  CHECK(*std::max_element(uv.begin(), uv.end()) < 3.0f);
  Tensor d = Tensor::uniform({5}, 9, 0, 0.0, 1.0, DType::F64);
  CHECK(d.dtype() == DType::F64);
}
