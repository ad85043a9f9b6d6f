// Philox-4x32-10 counter-based RNG (Salmon et al., SC'11). A stream is keyed
// by (seed, offset); element i of the stream is a pure function of
// (seed, offset, i), so the CPU and a GPU kernel with one thread per element
// draw identical words and uniforms (u32, uniform, bernoulli), and a resumed
// run draws what the original did. gumbel() and normal() go through the
// platform's logf/cosf, which differ in the last ulp between glibc and CUDA;
// GPU code that must match the host bit for bit (MoE routing noise) uses the
// portable logf in backend/cuda/routing.h instead.
#pragma once
#include <cmath>
#include <cstdint>

#include "strata/core/hostdevice.h"

namespace strata {

struct Philox4x32 {
  uint32_t v[4];
};

STRATA_HD Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                   uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c0;
    uint64_t p1 = uint64_t(M1) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// One stream. Block b = philox(counter = (lo b, hi b, lo offset, hi offset),
// key = seed) yields the 4 words for elements 4b..4b+3.
struct PhiloxStream {
  uint64_t seed = 0;
  uint64_t offset = 0;

  STRATA_HD uint32_t u32(uint64_t i) const {
    uint64_t b = i >> 2;
    Philox4x32 r = philox4x32_10(uint32_t(b), uint32_t(b >> 32), uint32_t(offset), uint32_t(offset >> 32),
                                 uint32_t(seed), uint32_t(seed >> 32));
    return r.v[i & 3];
  }
  // Uniform in [0, 1) with 24 random bits (exactly representable in f32).
  STRATA_HD float uniform(uint64_t i) const { return float(u32(i) >> 8) * (1.0f / 16777216.0f); }
  // Uniform in (0, 1]: never 0, so log() is finite. The top draw (one in
  // 2^24) rounds to exactly 1 in f32, where gumbel() gives +inf on every
  // device alike (the noise is part of the stream's definition; changing it
  // would change every routing decision drawn so far).
  STRATA_HD float uniform_open(uint64_t i) const {
    return (float(u32(i) >> 8) + 0.5f) * (1.0f / 16777216.0f);
  }
  // Standard normal by Box-Muller; element i uses words 2i and 2i+1.
  STRATA_HD float normal(uint64_t i) const {
    float u1 = uniform_open(2 * i);
    float u2 = uniform(2 * i + 1);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
  }
  // Gumbel(0, 1): -log(-log(u)).
  STRATA_HD float gumbel(uint64_t i) const { return -logf(-logf(uniform_open(i))); }
  // True with probability p.
  STRATA_HD bool bernoulli(uint64_t i, float p) const { return uniform(i) < p; }
};

// Hands out disjoint stream offsets in a fixed order; its state (seed, next
// offset) is what a checkpoint stores to make a resumed run draw the same.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t next_offset = 0) : seed_(seed), next_(next_offset) {}
  PhiloxStream next_stream() { return PhiloxStream{seed_, next_++}; }
  uint64_t seed() const { return seed_; }
  uint64_t next_offset() const { return next_; }
  void set_state(uint64_t seed, uint64_t next_offset) {
    seed_ = seed;
    next_ = next_offset;
  }

 private:
  uint64_t seed_;
  uint64_t next_;
};

// Mixes several keys (seed, step, rank, op id...) into one 64-bit stream key (splitmix64).
STRATA_HD uint64_t mix_keys(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace strata
