// cuDNN fused attention (backend/cuda/cudnn_attention.h), called directly and
// through strata::scaled_dot_product_attention under each STRATA_ATTENTION
// policy: on a GPU of compute capability 8.0+ the standard cases must take
// cuDNN (so a graph cuDNN turns down fails here instead of silently falling
// back), and its forward output, lse and gradients must match the CPU
// composed op on the 16-bit-rounded inputs and Strata's fused kernel; rows
// that see no key give exact zeros; the plan cache hits on a repeated shape.
//
// Tolerance: cuDNN rounds the probabilities P (and dS in the backward) to the
// 16-bit type before the second matmuls, as flash attention does, so its
// error is a fraction of the output's magnitude rather than of each element:
// results are compared as max |got - ref| <= tolerance_for(dtype) * max |ref|.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "strata/autograd/ops_attention.h"
#include "strata/backend/cuda/attention.h"
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/cudnn_attention.h"

using namespace strata;
using test::cpu;
using test::gpu;
namespace bc = strata::backend::cuda;

namespace {

const PhiloxStream kStream{0xc0d0a77eULL, 3};

// STRATA_ATTENTION for one scope (nullptr: unset: auto).
struct ScopedPolicy : test::ScopedEnv {
  explicit ScopedPolicy(const char* value) : ScopedEnv("STRATA_ATTENTION", value) {}
};

struct Case {
  std::string name;
  int64_t B = 3, H = 4, Tq = 37, Tk = 37, D = 64;
  bool pad = true;
  bool causal = false;
  int64_t offset = 0;
  bool full_pad = false;    // the last batch has every key padded: its queries see no key
  bool prefix_pad = false;  // batch 1 also pads keys 0..2: with causality its queries 0..2 see no key
  bool bthd = false;        // q, k, v (and the gradient) as [B, T, H, D] buffers viewed as [B, H, T, D]
  std::string str() const { return name; }
};

// [B, Tk] f32 on the CPU, 1 = padded: batch b pads its last (b * 5) % Tk keys.
Tensor padding(const Case& c) {
  std::vector<double> m(size_t(c.B * c.Tk), 0.0);
  for (int64_t b = 0; b < c.B; ++b) {
    const int64_t n = (c.full_pad && b == c.B - 1) ? c.Tk : (b * 5) % c.Tk;
    for (int64_t j = c.Tk - n; j < c.Tk; ++j) m[size_t(b * c.Tk + j)] = 1.0;
    if (c.prefix_pad && b == 1)
      for (int64_t j = 0; j < 3 && j < c.Tk; ++j) m[size_t(b * c.Tk + j)] = 1.0;
  }
  return Tensor::from_vector(m, {c.B, c.Tk}).to(DType::F32);
}

// Whether query i of batch b sees any key (the semantics of the header).
bool sees_a_key(const Case& c, const std::vector<float>& pad, int64_t b, int64_t i) {
  for (int64_t j = 0; j < c.Tk; ++j) {
    if (!pad.empty() && pad[size_t(b * c.Tk + j)] != 0.f) continue;
    if (c.causal && j > i + c.offset) continue;
    return true;
  }
  return false;
}

struct Data {
  Tensor q, k, v, g, pad;  // f32 on the CPU, already rounded to the 16-bit dtype; pad f32 or undefined
};

Tensor rounded(const Tensor& x, DType dt) { return x.to(dt).to(DType::F32); }

Data make_data(const Case& c, DType dt, uint64_t seed) {
  Data d;
  d.q = rounded(Tensor::uniform({c.B, c.H, c.Tq, c.D}, seed, 0, -1, 1, DType::F32), dt);
  d.k = rounded(Tensor::uniform({c.B, c.H, c.Tk, c.D}, seed + 1, 0, -1, 1, DType::F32), dt);
  d.v = rounded(Tensor::uniform({c.B, c.H, c.Tk, c.D}, seed + 2, 0, -1, 1, DType::F32), dt);
  d.g = rounded(Tensor::uniform({c.B, c.H, c.Tq, c.D}, seed + 3, 0, -1, 1, DType::F32), dt);
  if (c.pad) d.pad = padding(c);
  return d;
}

// x in dtype dt on the GPU, contiguous or as a [B, T, H, D] buffer seen as [B, H, T, D].
Tensor on_gpu(const Tensor& x, DType dt, bool bthd) {
  if (!bthd) return gpu(x.to(dt));
  return gpu(x.to(dt).permute({0, 2, 1, 3}).contiguous()).permute({0, 2, 1, 3});
}

bc::AttentionMask gpu_mask(const Case& c, const Data& d) {
  bc::AttentionMask m;
  if (d.pad.defined()) m.key_padding = gpu(d.pad);
  m.causal = c.causal;
  m.causal_offset = c.offset;
  return m;
}

double scale_of(const Case& c) { return 1.0 / std::sqrt(double(c.D)); }

struct Result {
  Tensor out, dq, dk, dv;
};

// The CPU op (the composed path) in f32 on the rounded inputs.
Result cpu_reference(const Case& c, const Data& d) {
  auto leaf = [](const Tensor& x) {
    Tensor t = x.clone();
    t.set_requires_grad(true);
    return t;
  };
  Tensor q = leaf(d.q), k = leaf(d.k), v = leaf(d.v);
  Tensor out = scaled_dot_product_attention(q, k, v, d.pad, c.causal, c.offset, 0.0, kStream, false, scale_of(c));
  out.backward(d.g);
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// The op on the GPU under the given policy, forward and backward.
Result gpu_op(const Case& c, const Data& d, DType dt, const char* policy) {
  ScopedPolicy p(policy);
  auto leaf = [&](const Tensor& x) {
    Tensor t = on_gpu(x, dt, c.bthd);
    t.set_requires_grad(true);
    return t;
  };
  Tensor q = leaf(d.q), k = leaf(d.k), v = leaf(d.v);
  Tensor out = scaled_dot_product_attention(q, k, v, d.pad.defined() ? gpu(d.pad) : Tensor(), c.causal, c.offset,
                                            0.0, kStream, true, scale_of(c));
  out.backward(on_gpu(d.g, dt, c.bthd));
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// max |got - ref| <= tol * max |ref| (see the file comment).
void require_close_to_scale(const Tensor& ref, const Tensor& got, double tol, const std::string& what) {
  const auto r = cpu(ref).to(DType::F64).contiguous().to_vector<double>();
  const auto g = cpu(got).to(DType::F64).contiguous().to_vector<double>();
  REQUIRE(r.size() == g.size());
  double scale = 0, worst = 0;
  size_t at = 0, non_finite = 0;
  for (double x : r) scale = std::fmax(scale, std::fabs(x));
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(g[i])) ++non_finite;
    const double e = std::fabs(g[i] - r[i]);
    if (!(e <= worst)) worst = e, at = i;  // a NaN difference counts as the worst
  }
  INFO(what << ": " << non_finite << " non-finite; max |diff| " << worst << " at " << at << " (ref "
            << (r.empty() ? 0 : r[at]) << ", got " << (g.empty() ? 0 : g[at]) << "), allowed " << tol * scale
            << " = " << tol << " * max |ref| " << scale);
  REQUIRE(non_finite == 0);
  REQUIRE(worst <= tol * scale);
}

void compare(const Result& ref, const Result& got, double tol, const std::string& what) {
  require_close_to_scale(ref.out, got.out, tol, what + " out");
  require_close_to_scale(ref.dq, got.dq, tol, what + " dq");
  require_close_to_scale(ref.dk, got.dk, tol, what + " dk");
  require_close_to_scale(ref.dv, got.dv, tol, what + " dv");
}

// lse against the log-sum-exp of the visible scaled scores in double; -inf
// exactly where a query sees no key.
void check_lse(const Case& c, const Data& d, const Tensor& lse_gpu, const std::string& what) {
  REQUIRE(lse_gpu.shape() == Shape({c.B, c.H, c.Tq}));
  const auto lse = cpu(lse_gpu).to_vector<float>();
  const auto q = d.q.to_vector<float>(), k = d.k.to_vector<float>();
  const auto pad = d.pad.defined() ? d.pad.to_vector<float>() : std::vector<float>();
  const double scale = scale_of(c);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t i = 0; i < c.Tq; ++i) {
        std::vector<double> sc;
        for (int64_t j = 0; j < c.Tk; ++j) {
          if ((!pad.empty() && pad[size_t(b * c.Tk + j)] != 0.f) || (c.causal && j > i + c.offset)) continue;
          double dot = 0;
          for (int64_t e = 0; e < c.D; ++e)
            dot += double(q[size_t(((b * c.H + h) * c.Tq + i) * c.D + e)]) *
                   double(k[size_t(((b * c.H + h) * c.Tk + j) * c.D + e)]);
          sc.push_back(dot * scale);
        }
        const float got = lse[size_t((b * c.H + h) * c.Tq + i)];
        INFO(what << " lse at b " << b << " h " << h << " i " << i);
        if (sc.empty()) {
          REQUIRE(got == -std::numeric_limits<float>::infinity());
          continue;
        }
        double mx = sc[0], sum = 0;
        for (double x : sc) mx = std::max(mx, x);
        for (double x : sc) sum += std::exp(x - mx);
        const double want = mx + std::log(sum);
        REQUIRE(std::fabs(double(got) - want) <= 1e-4 * (1 + std::fabs(want)));
      }
}

// Rows that see no key: zero output and zero dq; padded keys: zero dk and dv.
void check_exact_zeros(const Case& c, const Data& d, const Result& r, const std::string& what) {
  const auto pad = d.pad.defined() ? d.pad.to_vector<float>() : std::vector<float>();
  const auto out = cpu(r.out).to(DType::F32).contiguous().to_vector<float>();
  const auto dq = cpu(r.dq).to(DType::F32).contiguous().to_vector<float>();
  const auto dk = cpu(r.dk).to(DType::F32).contiguous().to_vector<float>();
  const auto dv = cpu(r.dv).to(DType::F32).contiguous().to_vector<float>();
  int64_t hidden_rows = 0, bad = 0;
  std::string first;
  auto note = [&](bool ok, const char* kind, int64_t b, int64_t t) {
    if (ok) return;
    if (bad++ == 0) first = std::string(kind) + " b " + std::to_string(b) + " at " + std::to_string(t);
  };
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.Tq; ++i) {
      if (sees_a_key(c, pad, b, i)) continue;
      ++hidden_rows;
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t e = 0; e < c.D; ++e) {
          const size_t x = size_t(((b * c.H + h) * c.Tq + i) * c.D + e);
          note(out[x] == 0.f && dq[x] == 0.f, "query", b, i);
        }
    }
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < c.Tk; ++j) {
      if (pad.empty() || pad[size_t(b * c.Tk + j)] == 0.f) continue;
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t e = 0; e < c.D; ++e) {
          const size_t x = size_t(((b * c.H + h) * c.Tk + j) * c.D + e);
          note(dk[x] == 0.f && dv[x] == 0.f, "padded key", b, j);
        }
    }
  INFO(what << ": " << bad << " gradients or outputs not exactly zero, first at " << first);
  REQUIRE(bad == 0);
  if (c.full_pad || (c.prefix_pad && c.causal)) REQUIRE(hidden_rows > 0);  // the case exercises it
}

// A GPU and a cuDNN runtime that cuDNN attention is meant to run on: 8.0+, and
// a runtime the refusal rules admit (9.0+, not 9.10.0/9.10.1). Elsewhere the
// cases are skipped with a warning: the refusal is the documented behaviour
// there, not a defect.
bool cudnn_capable_gpu() {
  const cuda::Context& ctx = cuda::context();
  if (ctx.cc_major < 8) {
    WARN("compute capability " << ctx.cc_major << "." << ctx.cc_minor << ": cuDNN flash attention needs 8.0+");
    return false;
  }
  const int64_t v = bc::cudnn_runtime_version();
  if (v < 90000 || v == 91000 || v == 91001) {
    WARN("cuDNN runtime " << v << ": cuDNN attention is refused there (needs 9.0+, not 9.10.0/9.10.1)");
    return false;
  }
  return true;
}

std::vector<Case> standard_cases() {
  std::vector<Case> cs;
  Case self;
  self.name = "self-attention Tq = Tk = 37, key padding";
  cs.push_back(self);
  Case causal = self;
  causal.name = "causal, key padding, batch 1's queries 0..2 see no key";
  causal.causal = true;
  causal.prefix_pad = true;
  cs.push_back(causal);
  Case cross = self;
  cross.name = "cross-attention Tq 19, Tk 41, key padding";
  cross.Tq = 19;
  cross.Tk = 41;
  cs.push_back(cross);
  Case none = self;
  none.name = "the last batch's queries see no key";
  none.full_pad = true;
  cs.push_back(none);
  return cs;
}

// Everything about one case in one dtype: cuDNN called directly (it must be
// available), against the CPU, against the fused kernel; then through the op.
void check_case(const Case& c, DType dt, uint64_t seed, bool require_available) {
  const std::string what = c.str() + " " + dtype_name(dt);
  INFO(what << ", cuDNN " << bc::cudnn_runtime_version());
  const Data d = make_data(c, dt, seed);
  const double tol = test::tolerance_for(dt);
  const Tensor q = on_gpu(d.q, dt, c.bthd), k = on_gpu(d.k, dt, c.bthd), v = on_gpu(d.v, dt, c.bthd);
  const Tensor g = on_gpu(d.g, dt, c.bthd);
  const bc::AttentionMask mask = gpu_mask(c, d);
  const std::string refusal = bc::cudnn_attention_refusal(q, k, v, mask, 0.0);
  if (!require_available && !refusal.empty()) {
    WARN(what << ": not taken by cuDNN here: " << refusal);
    return;
  }
  INFO("refusal: " << refusal);
  REQUIRE(refusal.empty());

  std::string why;
  const std::optional<bc::FusedAttentionForward> f = bc::cudnn_attention_forward(q, k, v, mask, scale_of(c), &why);
  INFO("cuDNN forward unavailable: " << why);
  REQUIRE(f.has_value());
  REQUIRE(f->out.dtype() == dt);
  REQUIRE(f->out.is_contiguous());
  const std::optional<bc::FusedAttentionGrads> r =
      bc::cudnn_attention_backward(g, q, k, v, f->out, f->lse, mask, scale_of(c), &why);
  INFO("cuDNN backward unavailable: " << why);
  REQUIRE(r.has_value());
  const Result direct{f->out, r->dq, r->dk, r->dv};

  const Result ref = cpu_reference(c, d);
  compare(ref, direct, tol, what + " cuDNN vs CPU");
  check_lse(c, d, f->lse, what + " cuDNN");
  check_exact_zeros(c, d, direct, what + " cuDNN");

  // Strata's fused kernel on the same inputs
  const bc::FusedAttentionForward ff = bc::fused_attention_forward(q, k, v, mask, scale_of(c), 0.0, kStream);
  const bc::FusedAttentionGrads fg =
      bc::fused_attention_backward(g, q, k, v, ff.lse, mask, scale_of(c), 0.0, kStream);
  compare(Result{ff.out, fg.dq, fg.dk, fg.dv}, direct, tol, what + " cuDNN vs fused kernel");

  // the op under STRATA_ATTENTION=cudnn (which throws rather than fall back)
  const Result op = gpu_op(c, d, dt, "cudnn");
  compare(ref, op, tol, what + " op (cudnn policy) vs CPU");
  check_exact_zeros(c, d, op, what + " op (cudnn policy)");
}

}  // namespace

// One test case per dtype: each builds a few plans (runtime compilation), and
// the device check counts a test case silent for a minute as hung.
TEST_CASE("cuDNN attention takes the standard cases in bf16 and matches the CPU and the fused kernel",
          "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  uint64_t seed = 4100;
  for (const Case& c : standard_cases()) {
    check_case(c, DType::BF16, seed, true);
    seed += 8;
  }
}

TEST_CASE("cuDNN attention takes the standard cases in f16 and matches the CPU and the fused kernel",
          "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  uint64_t seed = 4200;
  for (const Case& c : standard_cases()) {
    check_case(c, DType::F16, seed, true);
    seed += 8;
  }
}

TEST_CASE("cuDNN attention reads strided inputs and gradients", "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  std::vector<Case> cs = standard_cases();
  Case open = cs.front();
  open.name = "self-attention without key padding";
  open.pad = false;
  cs.push_back(open);
  uint64_t seed = 5200;
  for (const Case& base : cs) {
    Case c = base;
    c.name = base.name + " ([B, T, H, D] buffers)";
    c.bthd = true;
    check_case(c, DType::BF16, seed, true);
    seed += 8;
  }
}

TEST_CASE("cuDNN attention with a bottom-right causal mask where the runtime takes it", "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  // incremental decoding: the queries are the last Tq positions of the keys;
  // multiples of 64 are what runtimes before 9.6 take
  for (auto tq_tk : std::vector<std::pair<int64_t, int64_t>>{{19, 41}, {64, 128}}) {
    Case c;
    c.name = "bottom-right causal Tq " + std::to_string(tq_tk.first) + " Tk " + std::to_string(tq_tk.second);
    c.Tq = tq_tk.first;
    c.Tk = tq_tk.second;
    c.pad = false;
    c.causal = true;
    c.offset = c.Tk - c.Tq;
    check_case(c, DType::BF16, 6300 + uint64_t(c.Tq), false);
  }
}

TEST_CASE("cuDNN attention refuses what it cannot take, naming the reason", "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  Case c;
  c.pad = false;
  const Data d = make_data(c, DType::BF16, 7000);
  const Tensor q = gpu(d.q.to(DType::BF16)), k = gpu(d.k.to(DType::BF16)), v = gpu(d.v.to(DType::BF16));
  bc::AttentionMask none;
  CHECK(bc::cudnn_attention_refusal(q, k, v, none, 0.1).find("dropout") != std::string::npos);
  CHECK(bc::cudnn_attention_refusal(gpu(d.q), gpu(d.k), gpu(d.v), none, 0.0).find("bf16 or f16") !=
        std::string::npos);
  bc::AttentionMask odd;
  odd.causal = true;
  odd.causal_offset = 5;  // neither 0 nor Tk - Tq (= 0), and below Tk - 1
  CHECK(bc::cudnn_attention_refusal(q, k, v, odd, 0.0).find("causal offset") != std::string::npos);
  bc::AttentionMask open;
  open.causal = true;
  open.causal_offset = c.Tk - 1;  // hides nothing: no mask at all
  CHECK(bc::cudnn_attention_refusal(q, k, v, open, 0.0).empty());
  const Tensor q100 = gpu(Tensor::uniform({1, 2, 5, 100}, 1, 0, -1, 1, DType::F32).to(DType::BF16));
  CHECK(bc::cudnn_attention_refusal(q100, q100, q100, none, 0.0).find("head dim") != std::string::npos);
  // the direct calls return nullopt with the reason instead of throwing
  std::string why;
  CHECK_FALSE(bc::cudnn_attention_forward(gpu(d.q), gpu(d.k), gpu(d.v), none, 1.0, &why).has_value());
  CHECK(why.find("bf16 or f16") != std::string::npos);
}

TEST_CASE("STRATA_ATTENTION=strata never takes cuDNN; auto and cudnn do; cudnn refuses loudly",
          "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  Case c;
  c.name = "policy";
  const Data d = make_data(c, DType::BF16, 8100);
  const Tensor q = gpu(d.q.to(DType::BF16)), k = gpu(d.k.to(DType::BF16)), v = gpu(d.v.to(DType::BF16));
  const bc::AttentionMask mask = gpu_mask(c, d);
  auto op = [&](const Tensor& a, const Tensor& b, const Tensor& e, double p) {
    return scaled_dot_product_attention(a, b, e, mask.key_padding, c.causal, c.offset, p, kStream, true,
                                        scale_of(c));
  };
  auto touched = [](const bc::CudnnAttentionCounters& a, const bc::CudnnAttentionCounters& b) {
    return a.plans_built != b.plans_built || a.cache_hits != b.cache_hits || a.build_failures != b.build_failures;
  };
  {
    ScopedPolicy p("strata");
    CHECK_FALSE(bc::cudnn_attention_selected(q, k, v, mask, 0.0, false));
    const bc::CudnnAttentionCounters before = bc::cudnn_attention_counters();
    const Tensor out = op(q, k, v, 0.0);
    CHECK_FALSE(touched(before, bc::cudnn_attention_counters()));
    // exactly the fused kernel's result
    const bc::FusedAttentionForward f = bc::fused_attention_forward(q, k, v, mask, scale_of(c), 0.0, kStream);
    const Tensor a = cpu(out), b = cpu(f.out);
    REQUIRE(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
  }
  {
    ScopedPolicy p(nullptr);  // unset: auto
    CHECK(bc::attention_policy() == bc::AttentionPolicy::Auto);
    CHECK(bc::cudnn_attention_selected(q, k, v, mask, 0.0, false));
    CHECK_FALSE(bc::cudnn_attention_selected(q, k, v, mask, 0.1, false));  // dropout: the fused kernel
    // training (a backward follows): the fused kernel's deterministic backward
    CHECK_FALSE(bc::cudnn_attention_selected(q, k, v, mask, 0.0, true));
    // a single query (an incremental decoding step) stays with the fused kernel under auto
    const Tensor q1 = q.narrow(2, 0, 1);
    CHECK(bc::cudnn_attention_refusal(q1, k, v, mask, 0.0).empty());
    CHECK_FALSE(bc::cudnn_attention_selected(q1, k, v, mask, 0.0, false));
    const bc::CudnnAttentionCounters before = bc::cudnn_attention_counters();
    (void)op(q, k, v, 0.0);
    CHECK(touched(before, bc::cudnn_attention_counters()));
  }
  {
    ScopedPolicy p("cudnn");
    CHECK(bc::cudnn_attention_selected(q, k, v, mask, 0.0, false));
    CHECK(bc::cudnn_attention_selected(q, k, v, mask, 0.0, true));  // training too
    REQUIRE_THROWS_WITH(op(gpu(d.q), gpu(d.k), gpu(d.v), 0.0),
                        Catch::Contains("STRATA_ATTENTION=cudnn") && Catch::Contains("bf16 or f16"));
    REQUIRE_THROWS_WITH(op(q, k, v, 0.1), Catch::Contains("STRATA_ATTENTION=cudnn") && Catch::Contains("dropout"));
    CHECK(bc::cudnn_attention_selected(q.narrow(2, 0, 1), k, v, mask, 0.0, false));  // required: decoding steps too
    // not training: dropout is off, so cuDNN takes it
    CHECK_NOTHROW(scaled_dot_product_attention(q, k, v, mask.key_padding, false, 0, 0.1, kStream, false, 1.0));
  }
  {
    ScopedPolicy p("fastest");
    REQUIRE_THROWS_WITH(op(q, k, v, 0.0), Catch::Contains("STRATA_ATTENTION"));
  }
  // the CPU never consults the policy
  {
    ScopedPolicy p("fastest");
    CHECK_NOTHROW(scaled_dot_product_attention(d.q, d.k, d.v, d.pad, false, 0, 0.0, kStream, false, 1.0));
  }
}

TEST_CASE("cuDNN attention caches its plans and hits on a repeated shape", "[cuda][attention][cudnn]") {
  if (!cudnn_capable_gpu()) return;
  Case c;
  c.Tq = 23;
  c.Tk = 29;
  const Data d = make_data(c, DType::F16, 9100);
  const Tensor q = gpu(d.q.to(DType::F16)), k = gpu(d.k.to(DType::F16)), v = gpu(d.v.to(DType::F16));
  const bc::AttentionMask mask = gpu_mask(c, d);
  std::string why;
  REQUIRE(bc::cudnn_attention_forward(q, k, v, mask, 0.5, &why).has_value());  // builds (or finds) the plan
  const bc::CudnnAttentionCounters a = bc::cudnn_attention_counters();
  const std::optional<bc::FusedAttentionForward> f = bc::cudnn_attention_forward(q, k, v, mask, 0.5, &why);
  REQUIRE(f.has_value());
  const bc::CudnnAttentionCounters b = bc::cudnn_attention_counters();
  CHECK(b.plans_built == a.plans_built);
  CHECK(b.cache_hits == a.cache_hits + 1);
  CHECK(b.cached >= 1);
  CHECK(b.cached <= bc::kCudnnPlanCacheSize);
  // another scale is another graph
  REQUIRE(bc::cudnn_attention_forward(q, k, v, mask, 0.25, &why).has_value());
  CHECK(bc::cudnn_attention_counters().plans_built == b.plans_built + 1);
}
