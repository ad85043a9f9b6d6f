// GPU element-wise ops, sum_to_shape, accumulate_ and scale_ against their CPU
// twins on random inputs: every op, odd sizes, broadcasting both ways and with
// 0-d operands, non-contiguous (strided, offset) operands, a size past the
// capped grid, and f32/f64/f16/bf16. The 16-bit GPU results are compared with
// the CPU's f32 result on the 16-bit-rounded inputs; ops that only select or
// compare values (compare, where, masked_fill) must match exactly in every dtype.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "strata/backend/accumulate.h"
#include "strata/backend/elementwise.h"

using namespace strata;
using backend::BinaryOp;
using backend::CompareOp;
using backend::UnaryOp;
using strata::test::cpu;
using strata::test::gpu;
using strata::test::require_close;
using strata::test::tolerance_for;

namespace {

const DType kFloatTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16};
const DType kAllTypes[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64};

const std::vector<Shape> kShapes = {{}, {1, 1}, {7, 13}, {3, 1025}, {2, 3, 1, 5}};

const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{7, 13}, {7, 13}}, {{7, 13}, {13}},      {{13}, {7, 13}},       {{7, 1}, {1, 13}},
    {{}, {3, 4}},       {{3, 4}, {}},         {{1, 1}, {1, 1}},      {{3, 1025}, {3, 1}},
    {{2, 1, 4}, {2, 3, 1}}, {{3, 1, 5}, {4, 5}}, {{2, 1, 3, 1}, {5, 1, 4}}, {{0, 3}, {3}}};

// Uniform values in [lo, hi) (f32, CPU).
Tensor rnd(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  return Tensor::uniform(s, seed, 0, lo, hi, DType::F32);
}

// What a tensor of dtype dt holds for the f32 values x, in the dtype the CPU
// reference computes in (f64 stays f64; everything else f32).
Tensor reference_input(const Tensor& x, DType dt) {
  return dt == DType::F64 ? x.to(DType::F64) : x.to(dt).to(DType::F32);
}

// The values of the CPU tensor t on the GPU as a non-contiguous view: stored
// transposed in the last two dims, one slab into a larger buffer (nonzero
// offset); 1-d: every other element; 0-d: as is.
Tensor gpu_strided(const Tensor& t) {
  if (t.dim() == 0) return gpu(t);
  Tensor v;
  if (t.dim() == 1) {
    Tensor buf = Tensor::full({2 * t.size(0) + 1}, 777.0, t.dtype(), Device::cuda(0));
    v = buf.slice(0, 1, 2 * t.size(0) + 1, 2);
  } else {
    Shape big = t.shape();
    std::swap(big[big.size() - 1], big[big.size() - 2]);
    big[0] += 1;
    Tensor buf = Tensor::full(big, 777.0, t.dtype(), Device::cuda(0));
    v = buf.narrow(0, 1, big[0] - 1).transpose(-1, -2);
  }
  v.copy_(t);
  return v;
}

// Input range per unary op: inside the domain and away from singular points.
std::pair<double, double> unary_range(UnaryOp op) {
  switch (op) {
    case UnaryOp::Log:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
    case UnaryOp::Reciprocal: return {0.2, 4.0};
    case UnaryOp::Exp:
    case UnaryOp::Gelu: return {-4.0, 4.0};
    case UnaryOp::Tanh:
    case UnaryOp::Sigmoid: return {-2.0, 2.0};
    default: return {-3.0, 3.0};
  }
}

const UnaryOp kUnaryOps[] = {UnaryOp::Neg,  UnaryOp::Exp,  UnaryOp::Log,   UnaryOp::Tanh,
                             UnaryOp::Sigmoid, UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sqrt,
                             UnaryOp::Rsqrt, UnaryOp::Abs,  UnaryOp::Square, UnaryOp::Reciprocal};
const BinaryOp kBinaryOps[] = {BinaryOp::Add,     BinaryOp::Sub,     BinaryOp::Mul, BinaryOp::Div,
                               BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Pow};
const CompareOp kCompareOps[] = {CompareOp::Eq, CompareOp::Ne, CompareOp::Lt,
                                 CompareOp::Le, CompareOp::Gt, CompareOp::Ge};

// Operands of a binary op: a positive base for pow, a divisor away from 0.
Tensor binary_lhs(BinaryOp op, const Shape& s, uint64_t seed) {
  return op == BinaryOp::Pow ? rnd(s, seed, 0.5, 2.0) : rnd(s, seed, -2.0, 2.0);
}
Tensor binary_rhs(BinaryOp op, const Shape& s, uint64_t seed) {
  if (op == BinaryOp::Div) return rnd(s, seed, 0.5, 2.0);
  return op == BinaryOp::Pow ? rnd(s, seed, -2.0, 2.0) : rnd(s, seed, -2.0, 2.0);
}

// Small integers (many ties) in dtype dt, for comparisons and masks.
Tensor small_ints(const Shape& s, uint64_t seed, DType dt) {
  return rnd(s, seed, -3.0, 3.0).to(DType::I32).to(dt);
}

}  // namespace

TEST_CASE("GPU elementwise: unary ops match the CPU", "[cuda][elementwise]") {
  for (UnaryOp op : kUnaryOps) {
    const auto [lo, hi] = unary_range(op);
    for (DType dt : kFloatTypes) {
      for (const Shape& s : kShapes) {
        INFO(backend::unary_name(op) << " " << dtype_name(dt) << " " << shape_str(s));
        Tensor x = rnd(s, 11, lo, hi);
        Tensor ref = backend::unary(op, reference_input(x, dt));
        Tensor out = backend::unary(op, gpu(x.to(dt)));
        REQUIRE(out.dtype() == dt);
        REQUIRE(out.is_contiguous());
        require_close(ref, out, tolerance_for(dt), "contiguous");
        require_close(ref, backend::unary(op, gpu_strided(x.to(dt))), tolerance_for(dt), "strided");
      }
    }
  }
}

TEST_CASE("GPU elementwise: unary_backward matches the CPU", "[cuda][elementwise]") {
  for (UnaryOp op : kUnaryOps) {
    const auto [lo, hi] = unary_range(op);
    for (DType dt : kFloatTypes) {
      for (const Shape& s : {Shape{7, 13}, Shape{3, 1025}, Shape{}}) {
        INFO(backend::unary_name(op) << " " << dtype_name(dt) << " " << shape_str(s));
        const DType rt = dt == DType::F64 ? DType::F64 : DType::F32;
        Tensor x = reference_input(rnd(s, 12, lo, hi), dt);
        Tensor gy = reference_input(rnd(s, 13), dt);
        // y from the CPU, rounded to dt, so both sides read the same saved output
        Tensor y = reference_input(backend::unary(op, x).to(DType::F32), dt).to(rt);
        Tensor ref = backend::unary_backward(op, gy, x, y);
        Tensor out = backend::unary_backward(op, gpu(gy.to(dt)), gpu(x.to(dt)), gpu(y.to(dt)));
        REQUIRE(out.dtype() == dt);
        require_close(ref, out, tolerance_for(dt), "contiguous");
        out = backend::unary_backward(op, gpu_strided(gy.to(dt)), gpu_strided(x.to(dt)), gpu(y.to(dt)));
        require_close(ref, out, tolerance_for(dt), "strided");
      }
    }
  }
  // The saved tensor an op does not read may be undefined.
  Tensor x = rnd({5}, 14, 0.5, 2.0);
  require_close(backend::unary_backward(UnaryOp::Log, x, x, Tensor()),
                backend::unary_backward(UnaryOp::Log, gpu(x), gpu(x), Tensor()));
  require_close(backend::unary_backward(UnaryOp::Exp, x, Tensor(), x),
                backend::unary_backward(UnaryOp::Exp, gpu(x), Tensor(), gpu(x)));
  REQUIRE_THROWS_WITH(backend::unary_backward(UnaryOp::Exp, gpu(x), gpu(x), Tensor()), Catch::Contains("exp"));
}

TEST_CASE("GPU elementwise: binary ops broadcast like the CPU", "[cuda][elementwise]") {
  for (BinaryOp op : kBinaryOps) {
    for (DType dt : kFloatTypes) {
      for (const auto& [sa, sb] : kBroadcastPairs) {
        INFO(backend::binary_name(op) << " " << dtype_name(dt) << " " << shape_str(sa) << " " << shape_str(sb));
        Tensor a = binary_lhs(op, sa, 21), b = binary_rhs(op, sb, 22);
        Tensor ref = backend::binary(op, reference_input(a, dt), reference_input(b, dt));
        Tensor out = backend::binary(op, gpu(a.to(dt)), gpu(b.to(dt)));
        REQUIRE(out.dtype() == dt);
        REQUIRE(out.shape() == ref.shape());
        require_close(ref, out, tolerance_for(dt), "contiguous");
        require_close(ref, backend::binary(op, gpu_strided(a.to(dt)), gpu(b.to(dt))), tolerance_for(dt), "a strided");
        require_close(ref, backend::binary(op, gpu(a.to(dt)), gpu_strided(b.to(dt))), tolerance_for(dt), "b strided");
      }
    }
  }
}

TEST_CASE("GPU elementwise: expanded operands and a size past the capped grid", "[cuda][elementwise]") {
  // Stride-0 views made on the GPU (expand), and 1.1M elements, more than the
  // capped grid has threads, so the grid-stride loops wrap.
  Tensor a = rnd({1100, 1031}, 23), row = rnd({1031}, 24), col = rnd({1100, 1}, 25);
  require_close(backend::binary(BinaryOp::Mul, a, row), backend::binary(BinaryOp::Mul, gpu(a), gpu(row)));
  require_close(backend::binary(BinaryOp::Sub, col, a),
                backend::binary(BinaryOp::Sub, gpu(col).expand({1100, 1031}), gpu(a).transpose(0, 1).transpose(0, 1)));
  require_close(backend::unary(UnaryOp::Gelu, a.transpose(0, 1)), backend::unary(UnaryOp::Gelu, gpu(a).transpose(0, 1)));
  require_close(backend::binary(BinaryOp::Add, a, a), backend::binary(BinaryOp::Add, gpu(a), gpu_strided(a)));
}

TEST_CASE("GPU elementwise: binary ops with a scalar on either side", "[cuda][elementwise]") {
  for (BinaryOp op : kBinaryOps) {
    for (DType dt : kFloatTypes) {
      for (double s : {2.0, 0.5, -1.25}) {
        INFO(backend::binary_name(op) << " " << dtype_name(dt) << " " << s);
        Tensor x = op == BinaryOp::Pow ? rnd({7, 13}, 31, 0.5, 2.0) : rnd({7, 13}, 31, -2.0, 2.0);
        Tensor rx = reference_input(x, dt);
        require_close(backend::binary_scalar(op, rx, s), backend::binary_scalar(op, gpu(x.to(dt)), s),
                      tolerance_for(dt), "a op s");
        require_close(backend::binary_scalar(op, rx, s), backend::binary_scalar(op, gpu_strided(x.to(dt)), s),
                      tolerance_for(dt), "a op s, strided");
        // s op a: a positive base for pow, divisor x away from 0
        const double sl = op == BinaryOp::Pow ? std::fabs(s) : s;
        Tensor y = op == BinaryOp::Div ? rnd({7, 13}, 32, 0.5, 2.0) : x;
        Tensor ry = reference_input(y, dt);
        require_close(backend::scalar_binary(op, sl, ry), backend::scalar_binary(op, sl, gpu(y.to(dt))),
                      tolerance_for(dt), "s op a");
        require_close(backend::scalar_binary(op, sl, ry), backend::scalar_binary(op, sl, gpu_strided(y.to(dt))),
                      tolerance_for(dt), "s op a, strided");
      }
    }
  }
}

TEST_CASE("GPU elementwise: comparisons give the CPU's 0/1 in every dtype", "[cuda][elementwise]") {
  for (CompareOp op : kCompareOps) {
    for (DType dt : kAllTypes) {
      for (const auto& [sa, sb] : kBroadcastPairs) {
        INFO(int(op) << " " << dtype_name(dt) << " " << shape_str(sa) << " " << shape_str(sb));
        Tensor a = small_ints(sa, 41, dt), b = small_ints(sb, 42, dt);
        Tensor ref = backend::compare(op, a, b);
        Tensor out = backend::compare(op, gpu(a), gpu(b));
        REQUIRE(out.dtype() == dt);
        require_close(ref, out, 0.0, "compare");
        require_close(ref, backend::compare(op, gpu_strided(a), gpu_strided(b)), 0.0, "compare strided");
      }
      for (double s : {0.0, 0.5, -1.0}) {
        Tensor a = small_ints({7, 13}, 43, dt);
        require_close(backend::compare_scalar(op, a, s), backend::compare_scalar(op, gpu(a), s), 0.0, "scalar");
        require_close(backend::compare_scalar(op, a, s), backend::compare_scalar(op, gpu_strided(a), s), 0.0,
                      "scalar strided");
      }
    }
  }
  // Unrounded floats: comparisons of the stored 16-bit values.
  for (DType dt : kFloatTypes) {
    Tensor a = rnd({3, 1025}, 44).to(dt), b = rnd({3, 1025}, 45).to(dt);
    require_close(backend::compare(CompareOp::Lt, a, b), backend::compare(CompareOp::Lt, gpu(a), gpu(b)), 0.0);
    require_close(backend::compare_scalar(CompareOp::Ge, a, 0.1), backend::compare_scalar(CompareOp::Ge, gpu(a), 0.1),
                  0.0);
  }
}

TEST_CASE("GPU elementwise: where and masked_fill select like the CPU", "[cuda][elementwise]") {
  for (DType ct : kAllTypes) {
    for (DType dt : kAllTypes) {
      INFO(dtype_name(ct) << " " << dtype_name(dt));
      Tensor cond = small_ints({7, 1}, 51, ct);
      Tensor a = rnd({7, 13}, 52, -9, 9).to(dt), b = rnd({13}, 53, -9, 9).to(dt);
      require_close(backend::where(cond, a, b), backend::where(gpu(cond), gpu(a), gpu(b)), 0.0, "where");
      require_close(backend::where(cond, a, b), backend::where(gpu_strided(cond), gpu_strided(a), gpu(b)), 0.0,
                    "where strided");
      Tensor c2 = small_ints({7, 13}, 54, ct);
      require_close(backend::where(c2, b, a), backend::where(gpu(c2), gpu(b), gpu_strided(a)), 0.0, "where full cond");

      Tensor mask = small_ints({13}, 55, ct);
      const double v = is_floating(dt) ? -1e9 : -7.0;
      require_close(backend::masked_fill(a, mask, v), backend::masked_fill(gpu(a), gpu(mask), v), 0.0, "masked_fill");
      Tensor m2 = small_ints({7, 13}, 56, ct);
      require_close(backend::masked_fill(a, m2, 2.5), backend::masked_fill(gpu_strided(a), gpu_strided(m2), 2.5), 0.0,
                    "masked_fill strided");
      require_close(backend::masked_fill(a, Tensor::scalar(1.0).to(ct), 3.0),
                    backend::masked_fill(gpu(a), gpu(Tensor::scalar(1.0).to(ct)), 3.0), 0.0, "masked_fill 0-d mask");
    }
  }
}

TEST_CASE("GPU elementwise: sum_to_shape reduces broadcast dims like the CPU", "[cuda][elementwise]") {
  // (gradient shape, operand shape): trailing/leading/inner reductions, 0-d
  // targets, and sizes that split the reduction over several blocks.
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{7, 13}, {13}},        {{7, 13}, {7, 1}},        {{7, 13}, {1, 1}},     {{7, 13}, {}},
      {{3, 1025}, {3, 1}},    {{3, 1025}, {1025}},      {{4, 5, 6}, {5, 1}},   {{2, 3, 4, 5}, {3, 1, 5}},
      {{1, 13}, {13}},        {{5000, 3}, {3}},         {{100000}, {}},        {{2, 40000}, {2, 1}},
      {{301, 257}, {257}},    {{0, 4}, {4}},            {{0, 4}, {1, 4}},      {{6, 1, 7}, {1, 7}}};
  for (DType dt : kFloatTypes) {
    for (const auto& [gs, s] : cases) {
      INFO(dtype_name(dt) << " " << shape_str(gs) << " -> " << shape_str(s));
      Tensor g = rnd(gs, 61);
      Tensor ref = backend::sum_to_shape(reference_input(g, dt), s);
      Tensor out = backend::sum_to_shape(gpu(g.to(dt)), s);
      REQUIRE(out.shape() == s);
      REQUIRE(out.dtype() == dt);
      // f32 sums of up to 1e5 terms: the CPU and GPU add in f64 in different orders.
      require_close(ref, out, tolerance_for(dt), "contiguous");
      require_close(ref, backend::sum_to_shape(gpu_strided(g.to(dt)), s), tolerance_for(dt), "strided");
    }
  }
  // An expanded (stride-0) gradient sums to count * value.
  Tensor v = rnd({1, 7}, 62);
  require_close(backend::sum_to_shape(v.expand({300, 7}), {7}),
                backend::sum_to_shape(gpu(v).expand({300, 7}), {7}));
  // Same shape: the gradient itself.
  Tensor g = gpu(rnd({3, 4}, 63));
  REQUIRE(backend::sum_to_shape(g, {3, 4}).same(g));
  REQUIRE_THROWS_WITH(backend::sum_to_shape(g, {5}), Catch::Contains("sum_to_shape"));
}

TEST_CASE("GPU elementwise: accumulate_ and scale_ update any view in place", "[cuda][elementwise]") {
  for (DType dt : kFloatTypes) {
    for (double alpha : {1.0, -0.5}) {
      INFO(dtype_name(dt) << " alpha " << alpha);
      // dst: a transposed window of a larger buffer; the rest must stay as it was.
      Tensor buf = rnd({14, 7}, 71);
      Tensor src = rnd({7, 13}, 72);
      Tensor cbuf = reference_input(buf, dt), gbuf = gpu(buf.to(dt));
      auto view = [](const Tensor& b) { return b.narrow(0, 1, 13).transpose(0, 1); };
      backend::accumulate_(view(cbuf), reference_input(src, dt), alpha);
      backend::accumulate_(view(gbuf), gpu(src.to(dt)), alpha);
      require_close(cbuf, gbuf, tolerance_for(dt), "accumulate_ strided dst");
      // contiguous dst, strided src
      Tensor cd = reference_input(rnd({7, 13}, 73), dt), gd = gpu(rnd({7, 13}, 73).to(dt));
      backend::accumulate_(cd, reference_input(src, dt), alpha);
      backend::accumulate_(gd, gpu_strided(src.to(dt)), alpha);
      require_close(cd, gd, tolerance_for(dt), "accumulate_ strided src");
      // a view added into itself
      backend::accumulate_(cd, cd, alpha);
      backend::accumulate_(gd, gd, alpha);
      require_close(cd, gd, tolerance_for(dt), "accumulate_ self");
      // scale_
      backend::scale_(view(cbuf), alpha * 3);
      backend::scale_(view(gbuf), alpha * 3);
      require_close(cbuf, gbuf, tolerance_for(dt), "scale_ strided");
      backend::scale_(cd, 0.25);
      backend::scale_(gd, 0.25);
      require_close(cd, gd, tolerance_for(dt), "scale_");
      REQUIRE(gd.dtype() == dt);
    }
  }
  // src sharing bytes with dst (shifted by one): read in full before the update.
  Tensor c = rnd({50}, 74), g = gpu(c);
  Tensor expect = c.clone();
  backend::accumulate_(expect.slice(0, 1, 50), c.slice(0, 0, 49).clone(), 2.0);
  backend::accumulate_(g.slice(0, 1, 50), g.slice(0, 0, 49), 2.0);
  require_close(expect, g);
  // large: past the capped grid
  Tensor big = rnd({1100, 1031}, 75), gb = gpu(big), inc = rnd({1100, 1031}, 76);
  backend::accumulate_(big, inc, 0.5);
  backend::accumulate_(gb, gpu(inc), 0.5);
  require_close(big, gb);
}

TEST_CASE("GPU elementwise: mixed devices and unsupported dtypes are errors", "[cuda][elementwise]") {
  Tensor c = rnd({3, 4}, 81), g = gpu(c);
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Add, c, g), Catch::Contains("add"));
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Mul, g, c), Catch::Contains("mul"));
  REQUIRE_THROWS_WITH(backend::compare(CompareOp::Lt, g, c), Catch::Contains("lt"));
  REQUIRE_THROWS_WITH(backend::where(c, g, g), Catch::Contains("where"));
  REQUIRE_THROWS_WITH(backend::masked_fill(g, c, 0.0), Catch::Contains("masked_fill"));
  REQUIRE_THROWS_WITH(backend::unary_backward(UnaryOp::Tanh, g, Tensor(), c), Catch::Contains("tanh"));
  REQUIRE_THROWS_WITH(backend::accumulate_(g, c), Catch::Contains("accumulate_"));
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Add, g, gpu(c.to(DType::BF16))), Catch::Contains("add"));
  REQUIRE_THROWS_WITH(backend::binary(BinaryOp::Add, g, gpu(rnd({5}, 82))), Catch::Contains("add"));
  Tensor gi = gpu(small_ints({3, 4}, 83, DType::I64));
  REQUIRE_THROWS_WITH(backend::unary(UnaryOp::Exp, gi), Catch::Contains("exp"));
  REQUIRE_THROWS_WITH(backend::binary_scalar(BinaryOp::Div, gi, 2.0), Catch::Contains("div"));
  REQUIRE_THROWS_WITH(backend::accumulate_(gi, gi), Catch::Contains("accumulate_"));
  REQUIRE_THROWS_WITH(backend::scale_(gi, 2.0), Catch::Contains("scale_"));
  REQUIRE_THROWS_WITH(backend::masked_fill(g, gpu(rnd({5}, 84)), 0.0), Catch::Contains("masked_fill"));
}
