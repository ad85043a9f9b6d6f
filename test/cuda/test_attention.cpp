// Fused GPU attention (backend/cuda/attention.h through
// strata::scaled_dot_product_attention) against the CPU op, the composed
// reference: forward and gradients over a sweep of shapes with and without
// padding, causality, causal offsets and dropout; 16-bit inputs; rows that
// see no key; determinism; the fallback for head dims the kernels do not take.
// Every case runs with STRATA_ATTENTION=strata: under the default policy the
// dropout-free 16-bit cases would go to cuDNN instead.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/autograd/ops.h"
#include "strata/autograd/ops_attention.h"
#include "strata/backend/cuda/attention.h"

using namespace strata;
using test::cpu;
using test::gpu;
using test::require_close;

namespace {

const PhiloxStream kStream{0xa77e11ULL, 42};

struct Spec {
  int64_t B = 1, H = 1, Tq = 1, Tk = 1, D = 16;
  bool pad = false;
  DType pad_dt = DType::I32;
  bool full_pad = false;  // the last batch has every key padded
  bool causal = false;
  int64_t offset = 0;
  double p = 0.0;
  std::string str() const {
    return "B " + std::to_string(B) + " H " + std::to_string(H) + " Tq " + std::to_string(Tq) + " Tk " +
           std::to_string(Tk) + " D " + std::to_string(D) + (pad ? std::string(" pad ") + dtype_name(pad_dt) : "") +
           (full_pad ? " full-pad" : "") + (causal ? " causal " + std::to_string(offset) : "") + " p " +
           std::to_string(p);
  }
};

// [B, Tk] on the CPU: batch b has its last (b * 5) % Tk keys padded.
Tensor padding(const Spec& s) {
  std::vector<double> m(size_t(s.B * s.Tk), 0.0);
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t n = (s.full_pad && b == s.B - 1) ? s.Tk : (b * 5) % s.Tk;
    for (int64_t j = s.Tk - n; j < s.Tk; ++j) m[size_t(b * s.Tk + j)] = 1.0;
  }
  return Tensor::from_vector(m, {s.B, s.Tk}).to(s.pad_dt);
}

struct Data {
  Tensor q, k, v, g, pad;  // f32 on the CPU (pad: its own dtype, or undefined)
};
Data make_data(const Spec& s, uint64_t seed) {
  Data d;
  d.q = Tensor::uniform({s.B, s.H, s.Tq, s.D}, seed, 0, -1, 1, DType::F32);
  d.k = Tensor::uniform({s.B, s.H, s.Tk, s.D}, seed + 1, 0, -1, 1, DType::F32);
  d.v = Tensor::uniform({s.B, s.H, s.Tk, s.D}, seed + 2, 0, -1, 1, DType::F32);
  d.g = Tensor::uniform({s.B, s.H, s.Tq, s.D}, seed + 3, 0, -1, 1, DType::F32);
  if (s.pad) d.pad = padding(s);
  return d;
}

// x rounded to a 16-bit type and back: the CPU twin's input for a 16-bit GPU run.
Tensor rounded(const Tensor& x, DType dt) { return dt == DType::F32 ? x : x.to(dt).to(DType::F32); }

struct Result {
  Tensor out, dq, dk, dv;
};

// Forward and backward of the op on fresh leaves made from the f32 data.
Result run(const Spec& s, const Data& d, DType dt, Device dev) {
  auto leaf = [&](const Tensor& x) {
    Tensor t = x.to(dt).clone().to(dev);
    t.set_requires_grad(true);
    return t;
  };
  Tensor q = leaf(d.q), k = leaf(d.k), v = leaf(d.v);
  const double scale = 1.0 / std::sqrt(double(s.D));
  Tensor out = scaled_dot_product_attention(q, k, v, d.pad.defined() ? d.pad.to(dev) : Tensor(), s.causal, s.offset,
                                            s.p, kStream, true, scale);
  out.backward(d.g.to(dt).to(dev));
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// The CPU op in f32 on the (rounded) inputs.
Result cpu_reference(const Spec& s, const Data& d, DType dt) {
  Data r = d;
  r.q = rounded(d.q, dt);
  r.k = rounded(d.k, dt);
  r.v = rounded(d.v, dt);
  r.g = rounded(d.g, dt);
  return run(s, r, DType::F32, Device::cpu());
}

void compare(const Result& ref, const Result& got, double tol, const std::string& what) {
  require_close(ref.out, got.out, tol, what + " out");
  require_close(ref.dq, got.dq, tol, what + " dq");
  require_close(ref.dk, got.dk, tol, what + " dk");
  require_close(ref.dv, got.dv, tol, what + " dv");
}

void check_against_cpu(const Spec& s, DType dt, uint64_t seed, double tol) {
  const Data d = make_data(s, seed);
  const std::string what = s.str() + " " + dtype_name(dt);
  INFO(what);
  compare(cpu_reference(s, d, dt), run(s, d, dt, Device::cuda(0)), tol, what);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ac = cpu(a).contiguous(), bc = cpu(b).contiguous();
  return ac.dtype() == bc.dtype() && ac.shape() == bc.shape() &&
         std::memcmp(ac.raw_data(), bc.raw_data(), ac.nbytes()) == 0;
}

constexpr double kF32Tol = 1e-4;  // the online softmax sums in another order than the CPU

}  // namespace

TEST_CASE("cuda fused attention matches the CPU op over a shape sweep (f32)", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  int idx = 0;
  for (int64_t B : {1, 3})
    for (int64_t H : {1, 4})
      for (int64_t Tq : {1, 7, 65, 130})
        for (int64_t Tk : {1, 33, 130})
          for (int64_t D : {16, 64, 128}) {
            Spec s;
            s.B = B;
            s.H = H;
            s.Tq = Tq;
            s.Tk = Tk;
            s.D = D;
            // each shape gets one masking/dropout variant, in turn
            switch (idx % 6) {
              case 0: break;
              case 1: s.pad = true; break;
              case 2: s.causal = true; break;
              case 3: s.pad = true; s.pad_dt = DType::F32; s.causal = true; s.offset = Tk - Tq; break;
              case 4: s.pad = true; s.p = 0.1; break;
              case 5: s.pad = true; s.pad_dt = DType::I64; s.causal = true; s.offset = Tk - Tq; s.p = 0.2; break;
            }
            check_against_cpu(s, DType::F32, 100 + uint64_t(idx) * 4, kF32Tol);
            ++idx;
          }
}

TEST_CASE("cuda fused attention covers every mask with dropout on each head dim", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  // 24: the only head dim in (16, 32], whose padded-to-32 kernels (the
  // backward ones in particular) nothing else runs
  for (int64_t D : {16, 24, 33, 64, 100, 128})
    for (int variant = 0; variant < 4; ++variant) {
      Spec s;
      s.B = 3;
      s.H = 4;
      s.Tq = 65;
      s.Tk = 130;
      s.D = D;
      s.pad = true;
      s.p = 0.15;
      s.causal = variant > 0;
      s.offset = variant == 1 ? 0 : variant == 2 ? s.Tk - s.Tq : -5;  // -5: the first queries see nothing
      if (variant == 3) s.Tq = 130;
      check_against_cpu(s, DType::F32, 7000 + uint64_t(D * 4 + variant), kF32Tol);
    }
}

TEST_CASE("cuda fused attention in bf16 and f16 matches the CPU on rounded inputs", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  for (DType dt : {DType::BF16, DType::F16})
    for (int64_t D : {16, 64, 128})
      for (auto tq_tk : std::vector<std::pair<int64_t, int64_t>>{{7, 33}, {130, 130}, {65, 1}}) {
        Spec s;
        s.B = 3;
        s.H = 4;
        s.Tq = tq_tk.first;
        s.Tk = tq_tk.second;
        s.D = D;
        s.pad = true;
        s.causal = true;
        s.offset = s.Tk - s.Tq;
        s.p = 0.1;
        check_against_cpu(s, dt, 900 + uint64_t(D + s.Tq), test::tolerance_for(dt));
        s.causal = false;
        s.p = 0.0;
        check_against_cpu(s, dt, 950 + uint64_t(D + s.Tq), test::tolerance_for(dt));
      }
}

TEST_CASE("cuda fused attention gives exact zeros for queries that see no key", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  Spec s;
  s.B = 3;
  s.H = 4;
  s.Tq = 70;
  s.Tk = 40;
  s.D = 64;
  s.pad = true;
  s.full_pad = true;
  s.causal = true;
  s.offset = -3;  // queries 0..2 see no key in every batch
  s.p = 0.1;
  for (DType dt : {DType::F32, DType::BF16}) {
    const Data d = make_data(s, 31);
    const Result g = run(s, d, dt, Device::cuda(0));
    compare(cpu_reference(s, d, dt), g, dt == DType::F32 ? kF32Tol : test::tolerance_for(dt), s.str());
    const auto out = cpu(g.out).to(DType::F32).to_vector<float>();
    const auto dq = cpu(g.dq).to(DType::F32).to_vector<float>();
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t i = 0; i < s.Tq; ++i)
          for (int64_t e = 0; e < s.D; ++e) {
            const size_t x = size_t(((b * s.H + h) * s.Tq + i) * s.D + e);
            REQUIRE(std::isfinite(out[x]));
            REQUIRE(std::isfinite(dq[x]));
            if (b == s.B - 1 || i < 3) {
              REQUIRE(out[x] == 0.f);
              REQUIRE(dq[x] == 0.f);
            }
          }
    for (const Tensor& t : {g.dk, g.dv})
      for (float x : cpu(t).narrow(0, s.B - 1, 1).to(DType::F32).to_vector<float>()) REQUIRE(x == 0.f);
  }
}

TEST_CASE("cuda fused attention's log-sum-exp is that of the visible scores", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  Spec s;
  s.B = 2;
  s.H = 2;
  s.Tq = 9;
  s.Tk = 70;
  s.D = 32;
  s.pad = true;
  s.full_pad = true;
  s.causal = true;
  s.offset = 20;
  const Data d = make_data(s, 55);
  backend::cuda::AttentionMask mask;
  mask.key_padding = gpu(d.pad);
  mask.causal = true;
  mask.causal_offset = s.offset;
  const double scale = 0.3;
  const backend::cuda::FusedAttentionForward f =
      backend::cuda::fused_attention_forward(gpu(d.q), gpu(d.k), gpu(d.v), mask, scale, 0.0, kStream);
  REQUIRE(f.lse.shape() == Shape({s.B, s.H, s.Tq}));
  const auto lse = cpu(f.lse).to_vector<float>();
  const auto q = d.q.to_vector<float>(), k = d.k.to_vector<float>(), pad = d.pad.to(DType::F32).to_vector<float>();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Tq; ++i) {
        std::vector<double> sc;
        for (int64_t j = 0; j < s.Tk; ++j) {
          if (pad[size_t(b * s.Tk + j)] != 0 || j > i + s.offset) continue;
          double dot = 0;
          for (int64_t e = 0; e < s.D; ++e)
            dot += double(q[size_t(((b * s.H + h) * s.Tq + i) * s.D + e)]) *
                   double(k[size_t(((b * s.H + h) * s.Tk + j) * s.D + e)]);
          sc.push_back(dot * scale);
        }
        const float got = lse[size_t((b * s.H + h) * s.Tq + i)];
        if (sc.empty()) {
          REQUIRE(got == -std::numeric_limits<float>::infinity());
          continue;
        }
        double mx = sc[0], sum = 0;
        for (double x : sc) mx = std::max(mx, x);
        for (double x : sc) sum += std::exp(x - mx);
        REQUIRE(std::fabs(double(got) - (mx + std::log(sum))) <= 1e-5 * (1 + std::fabs(mx)));
      }
}

TEST_CASE("cuda fused attention is deterministic and is what the op runs", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  Spec s;
  s.B = 3;
  s.H = 4;
  s.Tq = 130;
  s.Tk = 130;
  s.D = 64;
  s.pad = true;
  s.causal = true;
  s.p = 0.1;
  for (DType dt : {DType::F32, DType::BF16}) {
    const Data d = make_data(s, 77);
    const Result a = run(s, d, dt, Device::cuda(0)), b = run(s, d, dt, Device::cuda(0));
    CHECK(same_bits(a.out, b.out));
    CHECK(same_bits(a.dq, b.dq));
    CHECK(same_bits(a.dk, b.dk));
    CHECK(same_bits(a.dv, b.dv));
    // the op took the fused kernels: the same bits as calling them directly
    const Tensor q = gpu(d.q.to(dt)), k = gpu(d.k.to(dt)), v = gpu(d.v.to(dt));
    REQUIRE(backend::cuda::fused_attention_supported(q, k, v));
    backend::cuda::AttentionMask mask;
    mask.key_padding = gpu(d.pad);
    mask.causal = true;
    const backend::cuda::FusedAttentionForward f =
        backend::cuda::fused_attention_forward(q, k, v, mask, 1.0 / std::sqrt(double(s.D)), s.p, kStream);
    CHECK(same_bits(a.out, f.out));
  }
}

TEST_CASE("cuda fused attention reads strided inputs, gradients and masks", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  Spec s;
  s.B = 3;
  s.H = 4;
  s.Tq = 37;
  s.Tk = 45;
  s.D = 64;
  s.pad = true;
  s.p = 0.1;
  s.causal = true;
  s.offset = s.Tk - s.Tq;
  const Data d = make_data(s, 13);
  const Result ref = cpu_reference(s, d, DType::F32);
  // q, k, v as [B, T, H, D] buffers viewed as [B, H, T, D]; the gradient
  // transposed the same way; the padding a column slice of a wider mask
  auto bthd = [](const Tensor& x) {
    Tensor t = gpu(x.permute({0, 2, 1, 3}).contiguous()).permute({0, 2, 1, 3});
    t.set_requires_grad(true);
    return t;
  };
  Tensor q = bthd(d.q), k = bthd(d.k), v = bthd(d.v);
  REQUIRE(!q.is_contiguous());
  Tensor wide = Tensor::zeros({s.B, s.Tk + 3}, d.pad.dtype());
  wide.narrow(1, 2, s.Tk).copy_(d.pad);
  const Tensor pad = gpu(wide).narrow(1, 2, s.Tk);
  const Tensor out =
      scaled_dot_product_attention(q, k, v, pad, true, s.offset, s.p, kStream, true, 1.0 / std::sqrt(double(s.D)));
  out.backward(gpu(d.g.permute({0, 2, 1, 3}).contiguous()).permute({0, 2, 1, 3}));
  compare(ref, Result{out.detach(), q.grad(), k.grad(), v.grad()}, kF32Tol, "strided");
  // the padding may also stay on the CPU: the op moves it
  const Tensor out_cpu_pad =
      scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), d.pad, true, s.offset, s.p, kStream, true,
                                   1.0 / std::sqrt(double(s.D)));
  CHECK(same_bits(out_cpu_pad, out));
}

TEST_CASE("cuda attention falls back to the composed path for head dims and dtypes the kernels do not take",
          "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  Spec s;
  s.B = 3;
  s.H = 2;
  s.Tq = 33;
  s.Tk = 65;
  s.D = 160;
  s.pad = true;
  s.causal = true;
  s.offset = s.Tk - s.Tq;
  s.p = 0.1;
  {
    const Data d = make_data(s, 500);
    REQUIRE(!backend::cuda::fused_attention_supported(gpu(d.q), gpu(d.k), gpu(d.v)));
    check_against_cpu(s, DType::F32, 500, kF32Tol);
  }
  s.D = 64;
  const Data d = make_data(s, 600);
  REQUIRE(!backend::cuda::fused_attention_supported(gpu(d.q.to(DType::F64)), gpu(d.k.to(DType::F64)),
                                                     gpu(d.v.to(DType::F64))));
  const Result c = run(s, d, DType::F64, Device::cpu());
  const Result g = run(s, d, DType::F64, Device::cuda(0));
  compare(c, g, 1e-9, "f64 fallback");
}

TEST_CASE("cuda attention refuses inputs on different devices", "[cuda][attention]") {
  test::ScopedEnv strata_kernels("STRATA_ATTENTION", "strata");  // ours, not cuDNN (test_cudnn_attention.cpp)
  const Tensor q = Tensor::uniform({1, 2, 3, 16}, 1, 0, -1, 1, DType::F32);
  const Tensor k = Tensor::uniform({1, 2, 5, 16}, 2, 0, -1, 1, DType::F32);
  REQUIRE_THROWS_WITH(scaled_dot_product_attention(gpu(q), k, gpu(k), Tensor(), false, 0, 0.0, kStream, false, 1.0),
                      Catch::Contains("scaled_dot_product_attention"));
}
