// GPU GEMMs (backend::matmul / gemm_into / bmm on cuBLASLt, the fused
// linear_forward, strata::linear / linear_relu on GPU tensors) against their
// CPU twins computed in f64 from exactly the values the GPU reads.
#include <cmath>
#include <limits>
#include <vector>

#include "cuda_test_util.h"
#include "strata/autograd/ops_linalg.h"
#include "strata/backend/cuda/gemm.h"
#include "strata/backend/gemm.h"
#include "strata/core/allocator.h"

using namespace strata;

namespace {

struct MNK {
  int64_t M, N, K;
};

// Stored shape of an operand read as [rows, cols] under a transpose flag.
Shape stored(int64_t rows, int64_t cols, bool trans) { return trans ? Shape{cols, rows} : Shape{rows, cols}; }

// Uniform [-1, 1) values stored in dt on the CPU. For 16-bit dtypes these are
// the rounded values, so the f64 reference reads exactly what the GPU reads.
Tensor host_rand(const Shape& s, uint64_t seed, DType dt) {
  return Tensor::uniform(s, seed, 0, -1.0, 1.0, DType::F32).to(dt);
}

Tensor f64(const Tensor& t) { return t.to(DType::F64); }  // CPU, contiguous

// Tolerance of a K-term product against the f64 CPU reference (require_close
// is relative to |reference| + 1% of the largest |reference|).
// - f32 (pure fp32, no TF32): the rounding error of a K-term fp32 sum of
//   products of U(-1,1) values has a standard deviation of about u*K/4
//   (u = 2^-24; partial sums grow like sqrt(k)/3), while the results, and
//   with them the 1% floor, grow like sqrt(K). The error relative to the
//   floor therefore grows like sqrt(K): 1e-5 holds with margin up to K = 16,
//   beyond that 1e-5 * sqrt(K)/4 keeps 5 standard deviations inside the
//   tolerance for elements near zero (K = 257: 4e-5).
// - bf16/f16: the inputs are exact in fp32 and accumulate in fp32; the error
//   that matters is the final rounding of the output (2^-9 for bf16, 2^-11
//   for f16), inside tolerance_for(dt) at every K without scaling.
// - f64: ~K * 1e-16, far inside 1e-10.
double product_tol(DType dt, int64_t K) {
  const double base = test::tolerance_for(dt);
  if (dt == DType::F32) return base * std::max(1.0, std::sqrt(double(K)) / 4.0);
  return base;
}

// alpha * prod + beta * c0, element-wise in f64 (CPU).
Tensor axpby(const Tensor& prod, const Tensor& c0, double alpha, double beta) {
  std::vector<double> p = prod.to_vector<double>(), c = c0.to_vector<double>();
  for (size_t i = 0; i < p.size(); ++i) p[i] = alpha * p[i] + beta * c[i];
  return Tensor::from_vector(p, prod.shape());
}

// x[rows, in] @ w[out, in]^T + b, then relu, in f64 on the CPU.
Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor& b, bool relu) {
  Tensor y = backend::matmul(f64(x), f64(w), false, true);
  std::vector<double> v = y.to_vector<double>();
  const int64_t out = w.shape()[0];
  std::vector<double> bv = b.defined() ? f64(b).to_vector<double>() : std::vector<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    if (b.defined()) v[i] += bv[i % size_t(out)];
    if (relu && v[i] < 0) v[i] = 0;
  }
  return Tensor::from_vector(v, y.shape());
}

// Allocations made through the GPU caching allocator so far: an op that reads
// its operands in place allocates exactly its output.
uint64_t gpu_allocs() { return allocator_for(Device::cuda(0)).stats().num_allocs; }

// A GPU view read back as a contiguous GPU tensor for require_close (the view
// is rebuilt on a host copy of its buffer, so no GPU-side copy op is needed).
Tensor readback(const Tensor& host_view_of_buffer) { return test::gpu(host_view_of_buffer); }

}  // namespace

// ---------------------------------------------------------------- matmul

TEST_CASE("cuda matmul matches the CPU for every layout, dtype and odd size", "[cuda][gemm]") {
  const MNK s = GENERATE(MNK{1, 1, 1}, MNK{7, 13, 5}, MNK{129, 65, 257});
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  Tensor a = host_rand(stored(s.M, s.K, ta), 11, dt), b = host_rand(stored(s.K, s.N, tb), 12, dt);
  Tensor c = backend::matmul(test::gpu(a), test::gpu(b), ta, tb);
  REQUIRE(c.device().is_cuda());
  REQUIRE(c.dtype() == dt);
  REQUIRE(c.shape() == Shape{s.M, s.N});
  REQUIRE(c.is_contiguous());
  test::require_close(backend::matmul(f64(a), f64(b), ta, tb), c, product_tol(dt, s.K), "matmul");
}

TEST_CASE("cuda matmul reads transposed, narrowed, strided and broadcast GPU views", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t M = 11, N = 7, K = 13;
  const Shape sa = stored(M, K, ta), sb = stored(K, N, tb);
  // a_host / b_host: the same views on the CPU, for the reference
  auto check = [&](const Tensor& a_host, const Tensor& b_host, const Tensor& a_dev, const Tensor& b_dev,
                   uint64_t expected_allocs) {
    const uint64_t before = gpu_allocs();
    Tensor c = backend::matmul(a_dev, b_dev, ta, tb);
    REQUIRE(gpu_allocs() - before == expected_allocs);
    test::require_close(backend::matmul(f64(a_host), f64(b_host), ta, tb), c, product_tol(dt, K), "view");
  };
  SECTION("transposed views: read through the transpose flag, no copy") {
    Tensor a = host_rand({sa[1], sa[0]}, 41, dt), b = host_rand({sb[1], sb[0]}, 42, dt);
    Tensor ad = test::gpu(a).transpose(0, 1), bd = test::gpu(b).transpose(0, 1);
    REQUIRE_FALSE(ad.is_contiguous());
    check(a.transpose(0, 1), b.transpose(0, 1), ad, bd, 1);
  }
  SECTION("narrowed rows and columns at odd offsets: leading dimension > width, unaligned start, no copy") {
    Tensor a = host_rand({sa[0], sa[1] + 5}, 43, dt), b = host_rand({sb[0] + 2, sb[1] + 4}, 44, dt);
    check(a.narrow(1, 3, sa[1]), b.narrow(0, 2, sb[0]).narrow(1, 1, sb[1]), test::gpu(a).narrow(1, 3, sa[1]),
          test::gpu(b).narrow(0, 2, sb[0]).narrow(1, 1, sb[1]), 1);
  }
  SECTION("every other column: no unit stride, both copied first") {
    Tensor a = host_rand({sa[0], 2 * sa[1]}, 45, dt), b = host_rand({2 * sb[0], 2 * sb[1]}, 46, dt);
    check(a.slice(1, 0, 2 * sa[1], 2), b.slice(0, 1, 2 * sb[0], 2).slice(1, 0, 2 * sb[1], 2),
          test::gpu(a).slice(1, 0, 2 * sa[1], 2), test::gpu(b).slice(0, 1, 2 * sb[0], 2).slice(1, 0, 2 * sb[1], 2),
          3);
  }
  SECTION("broadcast rows (stride 0): copied first") {
    Tensor a = host_rand({1, sa[1]}, 47, dt), b = host_rand({sb[0], sb[1]}, 48, dt);
    check(a.expand(sa), b, test::gpu(a).expand(sa), test::gpu(b), 2);
  }
}

TEST_CASE("cuda matmul is bitwise deterministic across calls", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16);
  Tensor a = test::gpu(host_rand({257, 129}, 51, dt)), b = test::gpu(host_rand({129, 65}, 52, dt));
  Tensor c1 = test::cpu(backend::matmul(a, b)).to(DType::F64), c2 = test::cpu(backend::matmul(a, b)).to(DType::F64);
  REQUIRE(c1.to_vector<double>() == c2.to_vector<double>());
}

TEST_CASE("cuda matmul of empty operands gives empty or zero results", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16, DType::F64);
  SECTION("no rows") {
    Tensor c = backend::matmul(test::gpu(Tensor::zeros({0, 4}, dt)), test::gpu(host_rand({4, 3}, 1, dt)));
    REQUIRE(c.shape() == Shape{0, 3});
    REQUIRE(c.device().is_cuda());
  }
  SECTION("empty inner dimension sums to zero") {
    Tensor c = backend::matmul(test::gpu(Tensor::zeros({3, 0}, dt)), test::gpu(Tensor::zeros({0, 2}, dt)));
    test::require_close(Tensor::zeros({3, 2}, DType::F64), c, 0, "empty sum");
  }
}

// ---------------------------------------------------------------- gemm_into

TEST_CASE("cuda gemm_into computes alpha * op(a) @ op(b) + beta * out", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const double alpha = GENERATE(1.0, 0.5), beta = GENERATE(0.0, 1.0, -2.0);
  const MNK s = GENERATE(MNK{7, 13, 5}, MNK{129, 65, 257});
  Tensor a = host_rand(stored(s.M, s.K, ta), 81, dt), b = host_rand(stored(s.K, s.N, tb), 82, dt);
  Tensor out0 = host_rand({s.M, s.N}, 83, dt);
  Tensor out = test::gpu(out0);
  backend::gemm_into(out, test::gpu(a), test::gpu(b), ta, tb, alpha, beta);
  Tensor expected = axpby(backend::matmul(f64(a), f64(b), ta, tb), f64(out0), alpha, beta);
  test::require_close(expected, out, product_tol(dt, s.K), "gemm_into");
}

TEST_CASE("cuda gemm_into with beta 0 ignores NaN in the output buffer", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  Tensor a = host_rand({6, 4}, 91, dt), b = host_rand({4, 5}, 92, dt);
  Tensor out = test::gpu(Tensor::full({6, 5}, std::numeric_limits<double>::quiet_NaN(), dt));
  backend::gemm_into(out, test::gpu(a), test::gpu(b), false, false, 1.0, 0.0);
  test::require_close(backend::matmul(f64(a), f64(b)), out, product_tol(dt, 4), "beta 0");
}

TEST_CASE("cuda gemm_into writes through column-major, gapped, strided and aliased outputs", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t M = 9, N = 6, K = 7;
  Tensor a = host_rand(stored(M, K, ta), 101, dt), b = host_rand(stored(K, N, tb), 102, dt);
  Tensor ad = test::gpu(a), bd = test::gpu(b);
  Tensor prod = backend::matmul(f64(a), f64(b), ta, tb);
  const double tol = product_tol(dt, K);
  SECTION("column-major output (a transposed view)") {
    Tensor buf0 = host_rand({N, M}, 103, dt);
    Tensor buf = test::gpu(buf0);
    backend::gemm_into(buf.transpose(0, 1), ad, bd, ta, tb, 1.5, 0.5);
    REQUIRE(buf.shape() == Shape{N, M});
    test::require_close(axpby(prod, f64(buf0.transpose(0, 1)), 1.5, 0.5), readback(test::cpu(buf).transpose(0, 1)),
                        tol, "column-major out");
  }
  SECTION("output rows with a gap, leaving the gap alone") {
    Tensor buf0 = Tensor::full({M, N + 3}, 5.0, dt);
    Tensor buf = test::gpu(buf0);
    backend::gemm_into(buf.narrow(1, 0, N), ad, bd, ta, tb, 1.0, 1.0);
    Tensor host = test::cpu(buf);
    test::require_close(axpby(prod, f64(buf0.narrow(1, 0, N)), 1.0, 1.0), readback(host.narrow(1, 0, N)), tol,
                        "gapped out");
    test::require_close(Tensor::full({M, 3}, 5.0, DType::F64), readback(host.narrow(1, N, 3)), 0, "gap");
  }
  SECTION("output with no unit stride (through a copy)") {
    Tensor buf0 = host_rand({2 * M, 2 * N}, 104, dt);
    Tensor buf = test::gpu(buf0);
    backend::gemm_into(buf.slice(0, 0, 2 * M, 2).slice(1, 1, 2 * N, 2), ad, bd, ta, tb, -1.0, 2.0);
    Tensor host = test::cpu(buf);
    test::require_close(axpby(prod, f64(buf0.slice(0, 0, 2 * M, 2).slice(1, 1, 2 * N, 2)), -1.0, 2.0),
                        readback(host.slice(0, 0, 2 * M, 2).slice(1, 1, 2 * N, 2)), tol, "strided out");
    // the elements between the view's stay untouched
    test::require_close(f64(buf0.slice(0, 1, 2 * M, 2)), readback(host.slice(0, 1, 2 * M, 2)), 0, "untouched rows");
  }
}

TEST_CASE("cuda gemm_into accumulates correctly when the output aliases an operand", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16);
  Tensor a = host_rand({8, 8}, 111, dt), b = host_rand({8, 8}, 112, dt);
  Tensor ad = test::gpu(a);
  backend::gemm_into(ad, ad, test::gpu(b), false, false, 1.0, 1.0);  // a = a @ b + a
  test::require_close(axpby(backend::matmul(f64(a), f64(b)), f64(a), 1.0, 1.0), ad, product_tol(dt, 8), "aliased");
}

TEST_CASE("cuda gemm_into with an empty inner dimension scales the output by beta", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16);
  Tensor out = test::gpu(Tensor::from_vector<double>({1, -2, 3, 4}, {2, 2}).to(dt));
  Tensor a = test::gpu(Tensor::zeros({2, 0}, dt)), b = test::gpu(Tensor::zeros({0, 2}, dt));
  backend::gemm_into(out, a, b, false, false, 3.0, -0.5);
  test::require_close(Tensor::from_vector<double>({-0.5, 1, -1.5, -2}, {2, 2}), out, 0, "beta -0.5");
  backend::gemm_into(out, a, b, false, false, 3.0, 0.0);
  test::require_close(Tensor::zeros({2, 2}, DType::F64), out, 0, "beta 0");
}

// ---------------------------------------------------------------- bmm

TEST_CASE("cuda bmm matches the CPU per batch for every layout, dtype and odd size", "[cuda][gemm]") {
  const int64_t B = GENERATE(1, 3, 8);
  const MNK s = GENERATE(MNK{1, 1, 1}, MNK{7, 13, 5}, MNK{129, 65, 257});
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  const Shape sa = stored(s.M, s.K, ta), sb = stored(s.K, s.N, tb);
  Tensor a = host_rand({B, sa[0], sa[1]}, 121, dt), b = host_rand({B, sb[0], sb[1]}, 122, dt);
  Tensor c = backend::bmm(test::gpu(a), test::gpu(b), ta, tb);
  REQUIRE(c.shape() == Shape{B, s.M, s.N});
  REQUIRE(c.dtype() == dt);
  REQUIRE(c.is_contiguous());
  test::require_close(backend::bmm(f64(a), f64(b), ta, tb), c, product_tol(dt, s.K), "bmm");
}

TEST_CASE("cuda bmm takes non-contiguous batches", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t B = 4, M = 6, N = 5, K = 7;
  const Shape sa = stored(M, K, ta), sb = stored(K, N, tb);
  auto check = [&](const Tensor& a_host, const Tensor& b_host, const Tensor& a_dev, const Tensor& b_dev) {
    test::require_close(backend::bmm(f64(a_host), f64(b_host), ta, tb), backend::bmm(a_dev, b_dev, ta, tb),
                        product_tol(dt, K), "bmm view");
  };
  SECTION("batch dimension in the middle of the storage (attention heads)") {
    Tensor a = host_rand({sa[0], B, sa[1]}, 131, dt), b = host_rand({sb[0], B, sb[1]}, 132, dt);
    check(a.permute({1, 0, 2}), b.permute({1, 0, 2}), test::gpu(a).permute({1, 0, 2}),
          test::gpu(b).permute({1, 0, 2}));
  }
  SECTION("last two dims swapped (transposed matrices)") {
    Tensor a = host_rand({B, sa[1], sa[0]}, 133, dt), b = host_rand({B, sb[1], sb[0]}, 134, dt);
    check(a.transpose(1, 2), b.transpose(1, 2), test::gpu(a).transpose(1, 2), test::gpu(b).transpose(1, 2));
  }
  SECTION("one matrix broadcast over the batch (stride 0)") {
    Tensor a = host_rand({B, sa[0], sa[1]}, 135, dt), b = host_rand({1, sb[0], sb[1]}, 136, dt);
    check(a, b.expand({B, sb[0], sb[1]}), test::gpu(a), test::gpu(b).expand({B, sb[0], sb[1]}));
  }
  SECTION("every other column (copied first)") {
    Tensor a = host_rand({B, sa[0], 2 * sa[1]}, 137, dt), b = host_rand({B, sb[0], 2 * sb[1]}, 138, dt);
    check(a.slice(2, 0, 2 * sa[1], 2), b.slice(2, 1, 2 * sb[1], 2), test::gpu(a).slice(2, 0, 2 * sa[1], 2),
          test::gpu(b).slice(2, 1, 2 * sb[1], 2));
  }
}

TEST_CASE("cuda bmm runs the MoE expert products and their backward transposes without copies", "[cuda][gemm]") {
  // moe::experts_forward: h = bmm(x[E,C,d], w[E,f,d], false, true); its
  // backward: dx = bmm(g[E,C,f], w, false, false), dw = bmm(g, x, true, false).
  // The weights are a slice of a stacked buffer at an expert offset, as
  // ExpertBank::stacked makes them (offset 36*20 elements: 64/32-byte aligned).
  const DType dt = GENERATE(DType::F32, DType::BF16);
  const int64_t E = GENERATE(1, 3, 8);
  const int64_t C = 33, d = 20, f = 36;
  Tensor x = host_rand({E, C, d}, 141, dt), wbuf = host_rand({E + 1, f, d}, 142, dt), g = host_rand({E, C, f}, 143, dt);
  Tensor w = wbuf.narrow(0, 1, E);
  Tensor xd = test::gpu(x), wd = test::gpu(wbuf).narrow(0, 1, E), gd = test::gpu(g);
  auto run = [&](const Tensor& a, const Tensor& b, bool ta, bool tb) {
    const uint64_t before = gpu_allocs();
    Tensor c = backend::bmm(a, b, ta, tb);
    REQUIRE(gpu_allocs() - before == 1);  // the output only
    return c;
  };
  test::require_close(backend::bmm(f64(x), f64(w), false, true), run(xd, wd, false, true), product_tol(dt, d), "h");
  test::require_close(backend::bmm(f64(g), f64(w), false, false), run(gd, wd, false, false), product_tol(dt, f), "dx");
  test::require_close(backend::bmm(f64(g), f64(x), true, false), run(gd, xd, true, false), product_tol(dt, C), "dw");
}

TEST_CASE("cuda bmm of empty batches and empty inner dimensions", "[cuda][gemm]") {
  REQUIRE(backend::bmm(test::gpu(Tensor::zeros({0, 2, 3})), test::gpu(Tensor::zeros({0, 3, 4}))).shape() ==
          Shape{0, 2, 4});
  Tensor c = backend::bmm(test::gpu(Tensor::zeros({2, 2, 0})), test::gpu(Tensor::zeros({2, 0, 3})));
  test::require_close(Tensor::zeros({2, 2, 3}, DType::F64), c, 0, "empty sum");
}

// ---------------------------------------------------------------- fused linear

TEST_CASE("cuda linear_forward matches x @ W^T + b with and without bias and relu", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64, DType::BF16, DType::F16);
  const bool with_bias = GENERATE(false, true), relu = GENERATE(false, true);
  // {rows, out, in}: fused shapes, and the degenerate ones that run unfused (one row, one output, no inputs)
  const MNK s = GENERATE(MNK{7, 5, 13}, MNK{129, 65, 257}, MNK{1, 3, 5}, MNK{4, 1, 6}, MNK{3, 4, 0});
  Tensor x = host_rand({s.M, s.K}, 151, dt), w = host_rand({s.N, s.K}, 152, dt);
  Tensor b = with_bias ? host_rand({s.N}, 153, dt) : Tensor();
  Tensor y = backend::cuda::linear_forward(test::gpu(x), test::gpu(w), with_bias ? test::gpu(b) : Tensor(), relu);
  REQUIRE(y.shape() == Shape{s.M, s.N});
  REQUIRE(y.dtype() == dt);
  test::require_close(ref_linear(x, w, b, relu), y, product_tol(dt, std::max<int64_t>(s.K, 1)), "linear_forward");
}

TEST_CASE("cuda linear_forward takes views of x, weight and bias", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16);
  const bool relu = GENERATE(false, true);
  const int64_t rows = 19, in = 24, out = 10;
  // x: narrowed columns; weight: a transposed [in, out] buffer; bias: see sections
  Tensor xbuf = host_rand({rows, in + 3}, 161, dt), wbuf = host_rand({in, out}, 162, dt);
  Tensor x = xbuf.narrow(1, 1, in), w = wbuf.transpose(0, 1);
  Tensor xd = test::gpu(xbuf).narrow(1, 1, in), wd = test::gpu(wbuf).transpose(0, 1);
  SECTION("bias at an unaligned offset (copied for the epilogue)") {
    Tensor bbuf = host_rand({out + 1}, 163, dt);
    Tensor y = backend::cuda::linear_forward(xd, wd, test::gpu(bbuf).narrow(0, 1, out), relu);
    test::require_close(ref_linear(x, w, bbuf.narrow(0, 1, out), relu), y, product_tol(dt, in), "unaligned bias");
  }
  SECTION("strided bias") {
    Tensor bbuf = host_rand({2 * out}, 164, dt);
    Tensor y = backend::cuda::linear_forward(xd, wd, test::gpu(bbuf).slice(0, 0, 2 * out, 2), relu);
    test::require_close(ref_linear(x, w, bbuf.slice(0, 0, 2 * out, 2), relu), y, product_tol(dt, in),
                        "strided bias");
  }
}

TEST_CASE("cuda linear and linear_relu forward over leading dimensions", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16);
  const bool with_bias = GENERATE(false, true), relu = GENERATE(false, true);
  Tensor x = host_rand({3, 11, 16}, 171, dt), w = host_rand({9, 16}, 172, dt);
  Tensor b = with_bias ? host_rand({9}, 173, dt) : Tensor();
  Tensor xd = test::gpu(x), wd = test::gpu(w), bd = with_bias ? test::gpu(b) : Tensor();
  Tensor y = relu ? linear_relu(xd, wd, bd) : linear(xd, wd, bd);
  REQUIRE(y.shape() == Shape{3, 11, 9});
  REQUIRE(y.device().is_cuda());
  Tensor ref = ref_linear(x.reshape({33, 16}), w, b, relu).reshape({3, 11, 9});
  test::require_close(ref, y, product_tol(dt, 16), relu ? "linear_relu" : "linear");
}

// Needs the GPU versions of backend::sum (bias gradient) and
// backend::unary_backward (relu mask) from the reduce/elementwise groups.
TEST_CASE("cuda linear and linear_relu gradients match the CPU", "[cuda][gemm]") {
  const bool relu = GENERATE(false, true);
  const int64_t rows = 18, in = 13, out = 17;
  Tensor x = host_rand({2, 9, in}, 181, DType::F32), w = host_rand({out, in}, 182, DType::F32);
  Tensor b = host_rand({out}, 183, DType::F32), gy = host_rand({2, 9, out}, 184, DType::F32);
  auto run = [&](Tensor xi, Tensor wi, Tensor bi, const Tensor& gyi) {
    xi.set_requires_grad(true);
    wi.set_requires_grad(true);
    bi.set_requires_grad(true);
    Tensor y = relu ? linear_relu(xi, wi, bi) : linear(xi, wi, bi);
    y.backward(gyi);
    return std::vector<Tensor>{y.detach(), xi.grad(), wi.grad(), bi.grad()};
  };
  std::vector<Tensor> ref = run(f64(x), f64(w), f64(b), f64(gy));  // CPU, f64
  std::vector<Tensor> got = run(test::gpu(x), test::gpu(w), test::gpu(b), test::gpu(gy));
  const char* names[4] = {"y", "dx", "dw", "db"};
  const int64_t terms[4] = {in, out, rows, rows};
  for (size_t i = 0; i < 4; ++i) {
    REQUIRE(got[i].defined());
    test::require_close(ref[i], got[i], product_tol(DType::F32, terms[i]), names[i]);
  }
}

// ---------------------------------------------------------------- errors and the benchmark helper

TEST_CASE("cuda gemm ops reject mixed devices and unsupported operands", "[cuda][gemm]") {
  Tensor ac = host_rand({3, 4}, 1, DType::F32), bc = host_rand({4, 5}, 2, DType::F32);
  Tensor ag = test::gpu(ac), bg = test::gpu(bc);
  REQUIRE_THROWS_WITH(backend::matmul(ag, bc), Catch::Contains("matmul"));
  REQUIRE_THROWS_WITH(backend::matmul(ac, bg), Catch::Contains("matmul"));
  REQUIRE_THROWS_WITH(backend::bmm(ag.unsqueeze(0), bc.unsqueeze(0)), Catch::Contains("bmm"));
  REQUIRE_THROWS_WITH(backend::gemm_into(Tensor::zeros({3, 5}), ag, bg, false, false, 1, 0),
                      Catch::Contains("gemm_into"));
  REQUIRE_THROWS_WITH(backend::cuda::matmul(ac, bc), Catch::Contains("matmul: operands on cpu"));
  Tensor wc = host_rand({6, 4}, 3, DType::F32), bias_c = host_rand({6}, 4, DType::F32);
  REQUIRE_THROWS_WITH(linear(ag, wc), Catch::Contains("linear"));
  REQUIRE_THROWS_WITH(linear(ag, test::gpu(wc), bias_c), Catch::Contains("linear"));
  REQUIRE_THROWS_WITH(linear_relu(ag, test::gpu(wc), bias_c), Catch::Contains("linear_relu"));
  REQUIRE_THROWS_WITH(backend::cuda::linear_forward(ag, wc, Tensor(), false), Catch::Contains("linear_forward"));
  REQUIRE_THROWS_WITH(backend::cuda::linear_forward(ag, test::gpu(wc), test::gpu(host_rand({5}, 5, DType::F32)), true),
                      Catch::Contains("linear_forward: bias [5]"));
  // dtypes and shapes
  REQUIRE_THROWS_WITH(backend::matmul(ag, test::gpu(bc.to(DType::BF16))), Catch::Contains("matmul: dtypes differ"));
  REQUIRE_THROWS_WITH(
      backend::matmul(test::gpu(Tensor::zeros({3, 4}, DType::I32)), test::gpu(Tensor::zeros({4, 5}, DType::I32))),
      Catch::Contains("matmul: expected f32, f64, f16 or bf16"));
  REQUIRE_THROWS_WITH(backend::matmul(ag, test::gpu(Tensor::zeros({5, 6}))),
                      Catch::Contains("matmul: inner dimensions differ: [3, 4] @ [5, 6]"));
  REQUIRE_THROWS_WITH(backend::gemm_into(test::gpu(Tensor::zeros({5, 3})), ag, bg, false, false, 1, 0),
                      Catch::Contains("gemm_into: out has shape [5, 3], expected [3, 5]"));
}

TEST_CASE("measure_gemm_tflops reports a positive finite throughput", "[cuda][gemm]") {
  const DType dt = GENERATE(DType::F32, DType::BF16);
  const double tflops = backend::cuda::measure_gemm_tflops(dt, 256, 384, 512, 5);
  REQUIRE(std::isfinite(tflops));
  REQUIRE(tflops > 0);
  REQUIRE_THROWS_WITH(backend::cuda::measure_gemm_tflops(dt, 0, 4, 4, 1), Catch::Contains("measure_gemm_tflops"));
}
