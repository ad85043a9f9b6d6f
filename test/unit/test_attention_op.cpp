// strata::scaled_dot_product_attention on the CPU: a naive loop, the
// composed sequence of MultiheadAttention (bit for bit), gradients by finite
// differences, fully masked rows and argument errors.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "strata/autograd/ops.h"
#include "strata/autograd/ops_attention.h"
#include "test_util.h"

using namespace strata;

namespace {

struct Spec {
  int64_t B = 2, H = 3, Tq = 5, Tk = 7, D = 4;
  bool pad = false;
  bool causal = false;
  int64_t offset = 0;
  double p = 0.0;
  bool training = true;
  double scale = 1.0;
  std::string str() const {
    return "B " + std::to_string(B) + " H " + std::to_string(H) + " Tq " + std::to_string(Tq) + " Tk " +
           std::to_string(Tk) + " D " + std::to_string(D) + (pad ? " pad" : "") +
           (causal ? " causal " + std::to_string(offset) : "") + " p " + std::to_string(p) + " scale " +
           std::to_string(scale);
  }
};

const PhiloxStream kStream{0x5eedULL, 3};

// [B, Tk]: batch b has its last b keys padded (batch 0 none); with
// full_last, the last batch has every key padded.
Tensor padding(int64_t B, int64_t Tk, DType dt = DType::F32, bool full_last = false) {
  std::vector<double> m(size_t(B * Tk), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Tk; ++j)
      if (j >= Tk - b || (full_last && b == B - 1)) m[size_t(b * Tk + j)] = 1.0;
  return Tensor::from_vector(m, {B, Tk}).to(dt);
}

Tensor run(const Spec& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad) {
  return scaled_dot_product_attention(q, k, v, pad, s.causal, s.offset, s.p, kStream, s.training, s.scale);
}

// The definition, one output element at a time, in double.
std::vector<double> naive(const Spec& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad) {
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  const std::vector<double> pv = pad.defined() ? pad.to_vector<double>() : std::vector<double>();
  std::vector<double> out(size_t(s.B * s.H * s.Tq * s.D), 0.0);
  const bool drop = s.training && s.p > 0;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t bh = b * s.H + h;
      for (int64_t i = 0; i < s.Tq; ++i) {
        std::vector<double> sc(size_t(s.Tk));
        std::vector<bool> vis(size_t(s.Tk));
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.Tk; ++j) {
          vis[size_t(j)] = !(pad.defined() && pv[size_t(b * s.Tk + j)] != 0) && !(s.causal && j > i + s.offset);
          double dot = 0;
          for (int64_t d = 0; d < s.D; ++d)
            dot += qv[size_t((bh * s.Tq + i) * s.D + d)] * kv[size_t((bh * s.Tk + j) * s.D + d)];
          sc[size_t(j)] = dot * s.scale;
          if (vis[size_t(j)]) mx = std::max(mx, sc[size_t(j)]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // no visible key: zeros
        double sum = 0;
        for (int64_t j = 0; j < s.Tk; ++j) sum += vis[size_t(j)] ? std::exp(sc[size_t(j)] - mx) : 0.0;
        for (int64_t j = 0; j < s.Tk; ++j) {
          if (!vis[size_t(j)]) continue;
          double pr = std::exp(sc[size_t(j)] - mx) / sum;
          if (drop) {
            const uint64_t e = uint64_t((bh * s.Tq + i) * s.Tk + j);
            pr *= kStream.uniform(e) >= float(s.p) ? 1.0 / (1.0 - s.p) : 0.0;
          }
          for (int64_t d = 0; d < s.D; ++d)
            out[size_t((bh * s.Tq + i) * s.D + d)] += pr * vv[size_t((bh * s.Tk + j) * s.D + d)];
        }
      }
    }
  return out;
}

// MultiheadAttention's composed attention as src/nn/attention.cpp writes it
// (q already scaled; the causal mask a slice of an upper-triangular table).
Tensor module_sequence(const Spec& s, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  Tensor scores = bmm(reshape(q, {B * H, Tq, D}), reshape(k, {B * H, Tk, D}), false, true);
  scores = reshape(scores, {B, H, Tq, Tk});
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (pad.defined()) scores = masked_fill(scores, pad.unsqueeze(1).unsqueeze(1), neg_inf);
  if (s.causal) {
    const int64_t M = 64;
    Tensor u = Tensor::zeros({M, M}, DType::F32);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = i + 1; j < M; ++j) u.data<float>()[i * M + j] = 1.f;
    scores = masked_fill(scores, u.narrow(0, Tk - Tq, Tq).narrow(1, 0, Tk).unsqueeze(0).unsqueeze(0), neg_inf);
  }
  Tensor probs = softmax(scores, -1);
  if (s.training && s.p > 0) probs = dropout(probs, s.p, kStream, true);
  Tensor out = bmm(reshape(probs, {B * H, Tq, Tk}), reshape(v, {B * H, Tk, D}));
  return reshape(out, {B, H, Tq, D});
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  return ac.dtype() == bc.dtype() && ac.shape() == bc.shape() &&
         std::memcmp(ac.raw_data(), bc.raw_data(), ac.nbytes()) == 0;
}

struct Inputs {
  Tensor q, k, v;
};
Inputs inputs(const Spec& s, DType dt, uint64_t seed, bool grad) {
  Inputs in{test::rand({s.B, s.H, s.Tq, s.D}, seed, dt, -2, 2), test::rand({s.B, s.H, s.Tk, s.D}, seed + 1, dt, -2, 2),
            test::rand({s.B, s.H, s.Tk, s.D}, seed + 2, dt, -2, 2)};
  if (grad) {
    in.q.set_requires_grad(true);
    in.k.set_requires_grad(true);
    in.v.set_requires_grad(true);
  }
  return in;
}

std::vector<Spec> cases() {
  std::vector<Spec> c;
  Spec s;
  c.push_back(s);  // plain
  s.pad = true;
  c.push_back(s);
  s.causal = true;
  s.offset = 2;  // Tk - Tq: decoding the last Tq positions
  c.push_back(s);
  s.offset = 0;
  c.push_back(s);
  s.offset = -2;  // the first two queries see nothing
  c.push_back(s);
  s.p = 0.3;
  s.scale = 0.7;
  c.push_back(s);
  s.training = false;
  c.push_back(s);
  Spec t;
  t.B = 1;
  t.H = 1;
  t.Tq = 1;
  t.Tk = 1;
  t.D = 1;
  c.push_back(t);
  return c;
}

}  // namespace

TEST_CASE("attention op equals a naive loop", "[attention_op]") {
  uint64_t seed = 10;
  for (const Spec& s : cases()) {
    INFO(s.str());
    for (DType dt : {DType::F64, DType::F32}) {
      const Inputs in = inputs(s, dt, seed, false);
      const Tensor pad = s.pad ? padding(s.B, s.Tk) : Tensor();
      const Tensor out = run(s, in.q, in.k, in.v, pad);
      REQUIRE(out.shape() == Shape({s.B, s.H, s.Tq, s.D}));
      REQUIRE(out.dtype() == dt);
      const Tensor expected = Tensor::from_vector(naive(s, in.q, in.k, in.v, pad), out.shape());
      if (dt == DType::F64)
        test::require_close(out, expected, 1e-10, 1e-12);
      else
        test::require_close(out.to(DType::F64), expected, 1e-5, 1e-5);
    }
    seed += 3;
  }
}

TEST_CASE("attention op reproduces MultiheadAttention's composed attention bit for bit", "[attention_op]") {
  // f32 as in training; q pre-scaled and scale 1 as the module would call it;
  // padding of each mask dtype the model may hand over.
  for (DType pad_dt : {DType::F32, DType::I64, DType::I32}) {
    for (bool causal : {false, true}) {
      for (double p : {0.0, 0.25}) {
        Spec s;
        s.B = 3;
        s.H = 2;
        s.Tq = 6;
        s.Tk = 9;
        s.D = 8;
        s.pad = true;
        s.causal = causal;
        s.offset = s.Tk - s.Tq;
        s.p = p;
        INFO(s.str() << " pad " << dtype_name(pad_dt));
        const Inputs a = inputs(s, DType::F32, 77, true), b = inputs(s, DType::F32, 77, true);
        const Tensor pad = padding(s.B, s.Tk, pad_dt);
        const Tensor out = run(s, a.q, a.k, a.v, pad);
        const Tensor ref = module_sequence(s, b.q, b.k, b.v, pad);
        REQUIRE(same_bits(out, ref));
        const Tensor g = test::rand(out.shape(), 5);
        out.backward(g);
        ref.backward(g);
        CHECK(same_bits(a.q.grad(), b.q.grad()));
        CHECK(same_bits(a.k.grad(), b.k.grad()));
        CHECK(same_bits(a.v.grad(), b.v.grad()));
      }
    }
  }
}

TEST_CASE("attention op gradients match finite differences", "[attention_op]") {
  for (Spec s : cases()) {
    s.B = 2;
    s.H = 2;
    s.Tq = std::min<int64_t>(s.Tq, 3);
    s.Tk = std::min<int64_t>(s.Tk, 4);
    s.D = std::min<int64_t>(s.D, 3);
    if (s.causal) s.offset = std::min<int64_t>(s.offset, 1);
    INFO(s.str());
    const Tensor pad = s.pad ? padding(s.B, s.Tk) : Tensor();
    const Tensor q = test::grad_input({s.B, s.H, s.Tq, s.D}, 31, true);
    const Tensor k = test::grad_input({s.B, s.H, s.Tk, s.D}, 32);
    const Tensor v = test::grad_input({s.B, s.H, s.Tk, s.D}, 33, true);
    test::require_gradcheck(
        [&](const std::vector<Tensor>& x) { return run(s, x[0], x[1], x[2], pad); }, {q, k, v});
  }
}

TEST_CASE("attention op gives zeros for queries that see no key", "[attention_op]") {
  // The last batch is all padding; with offset -2 the first two queries of
  // every batch see nothing either.
  Spec s;
  s.B = 3;
  s.pad = true;
  s.causal = true;
  s.offset = -2;
  s.p = 0.2;
  const Inputs a = inputs(s, DType::F32, 91, true), b = inputs(s, DType::F32, 91, true);
  const Tensor pad = padding(s.B, s.Tk, DType::F32, /*full_last=*/true);
  const Tensor out = run(s, a.q, a.k, a.v, pad);
  const Tensor g = test::rand(out.shape(), 6);
  out.backward(g);
  const auto o = out.to_vector<float>();
  const auto dq = a.q.grad().to_vector<float>();
  for (int64_t b0 = 0; b0 < s.B; ++b0)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Tq; ++i)
        for (int64_t d = 0; d < s.D; ++d) {
          const size_t e = size_t(((b0 * s.H + h) * s.Tq + i) * s.D + d);
          REQUIRE(std::isfinite(o[e]));
          REQUIRE(std::isfinite(dq[e]));
          if (b0 == s.B - 1 || i < 2) {
            REQUIRE(o[e] == 0.f);
            REQUIRE(dq[e] == 0.f);
          }
        }
  for (const Tensor& t : {a.k.grad(), a.v.grad()})
    for (float x : t.narrow(0, s.B - 1, 1).to_vector<float>()) REQUIRE(x == 0.f);
  // and the same numbers as the composed path written out with a mask [B, 1, Tq, Tk]
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  Tensor mask = Tensor::zeros({B, 1, Tq, Tk}, DType::F32);
  const auto pv = pad.to_vector<float>();
  for (int64_t b0 = 0; b0 < B; ++b0)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j)
        mask.data<float>()[(b0 * Tq + i) * Tk + j] = (pv[size_t(b0 * Tk + j)] != 0 || j > i + s.offset) ? 1.f : 0.f;
  Tensor scores = reshape(bmm(reshape(b.q, {B * H, Tq, D}), reshape(b.k, {B * H, Tk, D}), false, true), {B, H, Tq, Tk});
  scores = masked_fill(scores, mask, -std::numeric_limits<double>::infinity());
  const Tensor probs = dropout(softmax(scores, -1), s.p, kStream, true);
  const Tensor ref = reshape(bmm(reshape(probs, {B * H, Tq, Tk}), reshape(b.v, {B * H, Tk, D})), {B, H, Tq, D});
  ref.backward(g);
  CHECK(same_bits(out, ref));
  CHECK(same_bits(a.q.grad(), b.q.grad()));
  CHECK(same_bits(a.k.grad(), b.k.grad()));
  CHECK(same_bits(a.v.grad(), b.v.grad()));
}

TEST_CASE("attention op: strided inputs, eval mode and extreme causal offsets", "[attention_op]") {
  Spec s;
  s.pad = true;
  s.p = 0.4;
  const Inputs in = inputs(s, DType::F32, 51, false);
  const Tensor pad = padding(s.B, s.Tk, DType::I32);
  SECTION("non-contiguous q, k, v give the contiguous result") {
    const Tensor out = run(s, in.q, in.k, in.v, pad);
    const Tensor nc = run(s, test::non_contiguous(in.q), test::non_contiguous(in.k), test::non_contiguous(in.v), pad);
    test::require_close(nc, out, 1e-6, 1e-6);
  }
  SECTION("dropout only in training") {
    Spec e = s;
    e.training = false;
    Spec none = s;
    none.p = 0.0;
    CHECK(same_bits(run(e, in.q, in.k, in.v, pad), run(none, in.q, in.k, in.v, pad)));
    CHECK(!same_bits(run(s, in.q, in.k, in.v, pad), run(none, in.q, in.k, in.v, pad)));
  }
  SECTION("offsets beyond the sequence hide nothing or everything") {
    Spec big = s, plain = s;
    big.causal = true;
    big.offset = std::numeric_limits<int64_t>::max();
    CHECK(same_bits(run(big, in.q, in.k, in.v, pad), run(plain, in.q, in.k, in.v, pad)));
    big.offset = std::numeric_limits<int64_t>::min();
    for (float x : run(big, in.q, in.k, in.v, pad).to_vector<float>()) REQUIRE(x == 0.f);
  }
}

TEST_CASE("attention op rejects bad arguments naming itself", "[attention_op]") {
  const Tensor q = test::rand({2, 3, 5, 4}, 1), k = test::rand({2, 3, 7, 4}, 2), v = test::rand({2, 3, 7, 4}, 3);
  auto call = [](const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& pad, double p) {
    return scaled_dot_product_attention(a, b, c, pad, false, 0, p, kStream, true, 1.0);
  };
  using Catch::Contains;
  REQUIRE_THROWS_WITH(call(q.reshape({6, 5, 4}), k, v, Tensor(), 0), Contains("scaled_dot_product_attention"));
  REQUIRE_THROWS_WITH(call(q, test::rand({2, 3, 7, 5}, 4), v, Tensor(), 0), Contains("do not agree"));
  REQUIRE_THROWS_WITH(call(q, k, test::rand({2, 3, 6, 4}, 4), Tensor(), 0), Contains("do not agree"));
  REQUIRE_THROWS_WITH(call(q, k, v.to(DType::F64), Tensor(), 0), Contains("one floating dtype"));
  REQUIRE_THROWS_WITH(call(q, k, v, padding(2, 6), 0), Contains("key padding mask must be [2, 7]"));
  REQUIRE_THROWS_WITH(call(q, k, v, Tensor(), 1.5), Contains("dropout p must be in [0, 1]"));
}
