// GPU routing of one MoE gate pass: the device twin of moe::route and
// moe::make_slot_map (strata/moe/routing.h). It makes the host's decisions
// bit for bit:
//  - first choice: the first maximum of the probabilities (p[e] > p[best]);
//  - second choice: the first maximum over the other experts of the logits,
//    plus, for the Sampling policy, the Gumbel noise of element r * V + e,
//    added in the gate dtype exactly as the host adds it; the Random policy's
//    keep test 2 * g2 > uniform(r) in the gate dtype;
//  - positions: an exclusive count per expert over rows in row order, every
//    first choice before every second choice (loc2 = count2 + first_count);
//  - keep = loc < capacity.
// The Gumbel noise is the one place where "the same formula" is not enough:
// PhiloxStream::gumbel calls logf, and the GPU's logf is not glibc's (both
// are within an ulp, not equal). host_logf below is glibc's logf algorithm
// (sysdeps/ieee754/flt-32/e_logf.c: a 16-entry table and a degree-4
// polynomial evaluated in double, one final rounding) written with explicit
// fma, so it compiles to the same IEEE operations on the CPU and the GPU; it
// equals the host's logf on every positive float (checked exhaustively against
// glibc 2.36, whose FMA and SSE2 variants also agree everywhere), and on the
// special values the noise can reach (1 -> 0, -0 -> -inf).
//
// Only for CUDA builds, except host_logf / host_gumbel (STRATA_HD), which also
// compile on the host so that tests can hold them against the host's logf.
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>

#include "strata/core/hostdevice.h"
#include "strata/core/philox.h"
#include "strata/core/tensor.h"
#include "strata/moe/routing.h"

namespace strata::backend::cuda {

namespace routing_detail {

STRATA_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

STRATA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// glibc's __logf_data: c near the centre of subinterval i of [OFF, 2 OFF),
// invc = 1/c, logc = log(c). A switch rather than a table, so that the one
// definition works in host and device code without a __constant__ copy.
STRATA_HD void logf_table(int i, double& invc, double& logc) {
  switch (i) {
    case 0: invc = 0x1.661ec79f8f3bep+0; logc = -0x1.57bf7808caadep-2; return;
    case 1: invc = 0x1.571ed4aaf883dp+0; logc = -0x1.2bef0a7c06ddbp-2; return;
    case 2: invc = 0x1.49539f0f010bp+0; logc = -0x1.01eae7f513a67p-2; return;
    case 3: invc = 0x1.3c995b0b80385p+0; logc = -0x1.b31d8a68224e9p-3; return;
    case 4: invc = 0x1.30d190c8864a5p+0; logc = -0x1.6574f0ac07758p-3; return;
    case 5: invc = 0x1.25e227b0b8eap+0; logc = -0x1.1aa2bc79c81p-3; return;
    case 6: invc = 0x1.1bb4a4a1a343fp+0; logc = -0x1.a4e76ce8c0e5ep-4; return;
    case 7: invc = 0x1.12358f08ae5bap+0; logc = -0x1.1973c5a611cccp-4; return;
    case 8: invc = 0x1.0953f419900a7p+0; logc = -0x1.252f438e10c1ep-5; return;
    case 9: invc = 0x1p+0; logc = 0x0p+0; return;
    case 10: invc = 0x1.e608cfd9a47acp-1; logc = 0x1.aa5aa5df25984p-5; return;
    case 11: invc = 0x1.ca4b31f026aap-1; logc = 0x1.c5e53aa362eb4p-4; return;
    case 12: invc = 0x1.b2036576afce6p-1; logc = 0x1.526e57720db08p-3; return;
    case 13: invc = 0x1.9c2d163a1aa2dp-1; logc = 0x1.bc2860d22477p-3; return;
    case 14: invc = 0x1.886e6037841edp-1; logc = 0x1.1058bc8a07ee1p-2; return;
    default: invc = 0x1.767dcf5534862p-1; logc = 0x1.4043057b6ee09p-2; return;
  }
}

}  // namespace routing_detail

// The host's logf (glibc), bit for bit, on the CPU and the GPU. Every step is
// an explicit IEEE operation (fma, or a product/sum that no compiler can fuse
// with a neighbour), so FMA contraction cannot change it on either side.
STRATA_HD float host_logf(float x) {
  using namespace routing_detail;
  constexpr uint32_t kOff = 0x3f330000u;
  constexpr double A0 = -0x1.00ea348b88334p-2, A1 = 0x1.5575b0be00b6ap-2, A2 = -0x1.ffffef20a4123p-2;
  constexpr double Ln2 = 0x1.62e42fefa39efp-1;
  uint32_t ix = float_bits(x);
  if (ix == 0x3f800000u) return 0.0f;  // log(1) = +0 in every rounding mode
  if (ix - 0x00800000u >= 0x7f800000u - 0x00800000u) {
    // x < 0x1p-126, inf or nan
    if (ix * 2u == 0u) return bits_float(0xff800000u);  // +-0 -> -inf
    if (ix == 0x7f800000u) return x;                     // log(inf) = inf
    if ((ix & 0x80000000u) || ix * 2u >= 0xff000000u) return (x - x) / (x - x);  // negative or nan -> nan
    ix = float_bits(x * 0x1p23f);  // subnormal: normalise
    ix -= 23u << 23;
  }
  // x = 2^k z with z in [OFF, 2 OFF), exact; subinterval i holds z, c is near its centre
  const uint32_t tmp = ix - kOff;
  const int i = int((tmp >> (23 - 4)) % 16u);
  const int k = int32_t(tmp) >> 23;  // arithmetic shift
  const uint32_t iz = ix - (tmp & 0xff800000u);
  double invc, logc;
  logf_table(i, invc, logc);
  const double z = double(bits_float(iz));
  // log(x) = log1p(z/c - 1) + log(c) + k ln2
  const double r = ::fma(z, invc, -1.0);
  const double y0 = ::fma(double(k), Ln2, logc);
#if defined(__CUDA_ARCH__)
  // round-to-nearest intrinsics: a plain PTX mul/add may be fused by ptxas
  const double r2 = __dmul_rn(r, r), y0r = __dadd_rn(y0, r);
#else
  const double r2 = r * r, y0r = y0 + r;
#endif
  double y = ::fma(A1, r, A2);
  y = ::fma(A0, r2, y);
  y = ::fma(y, r2, y0r);
  return float(y);
}

// PhiloxStream::gumbel(i) as the host computes it: -logf(-logf(uniform_open(i))).
STRATA_HD float host_gumbel(const PhiloxStream& s, uint64_t i) { return -host_logf(-host_logf(s.uniform_open(i))); }

#if defined(STRATA_WITH_CUDA)

// Chooses and places the choices of probs/logits [n, V] (f32 or f64, one GPU,
// any strides; n < 2^31) with per-expert capacity `capacity`: the GPU twin of
// moe::route<T> (same options, same checks; noise may be null for Argmax or
// top-1). Kernels only: nothing waits for the GPU.
moe::DeviceRouting route(const Tensor& probs, const Tensor& logits, int64_t capacity, const moe::RouteOptions& opt,
                         const PhiloxStream* noise);

// The host Routing of r, every field as moe::route sets it, in one transfer
// (which waits for the routing kernels).
moe::Routing download_routing(const moe::DeviceRouting& r);

// The slot map of r on its device (moe::make_slot_map's contract, which the
// caller checks against the host Routing: expert_base + r.experts <=
// buffer_experts, capacity >= the used capacity): first row_slot i64
// [rows * k], then slot_src i64 [buffer_experts * capacity]. rows = 0 (r
// undefined) gives an all-empty map on `device`.
std::pair<Tensor, Tensor> slot_map(const moe::DeviceRouting& r, int64_t expert_base, int64_t buffer_experts,
                                   int64_t capacity, Device device);

// What the gate's combine weights and balance loss read from r, on its
// device, in `dtype` (f32/f64), 1 or 0: onehot1 / onehot2 [n, V] the chosen
// expert of the first / second choice (a zero row without a second expert),
// so that sum(probs * onehot, 1) is the gathered probability with the gather's
// gradient and no host round trip; keep1 / keep2 [n, 1] the choice got a slot;
// first_count [1, V] first choices per expert before capacity.
struct GateColumns {
  Tensor onehot1, onehot2, keep1, keep2, first_count;
};
GateColumns gate_columns(const moe::DeviceRouting& r, DType dtype);

// moe::eom_keep on the device: [rows, k] in `dtype` (f32/f64), 1 or 0, the
// same draws (element i * experts + expert_offset + e of `stream`, below p =
// dropped; a choice without an expert keeps 1).
Tensor eom_keep(const moe::DeviceRouting& r, int64_t expert_offset, int64_t experts, const PhiloxStream& stream,
                double p, DType dtype);

// For tests: f32 [2^24] on the GPU, element m = host_gumbel of the 24-bit draw
// m (u32 >> 8 = m), i.e. every value the Gumbel noise can take.
Tensor gumbel_of_all_draws();

#endif

}  // namespace strata::backend::cuda
