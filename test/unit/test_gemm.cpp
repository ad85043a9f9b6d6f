// Matrix products: backend::matmul / gemm_into / bmm against a naive triple
// loop in double, and the differentiable matmul / bmm / linear by gradcheck.
#include <cblas.h>

#include <cmath>
#include <limits>

#include "strata/autograd/ops_linalg.h"
#include "strata/backend/gemm.h"
#include "test_util.h"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace strata;

namespace {

struct MNK {
  int64_t M, N, K;
};

// op(a) @ op(b) in double from the logical (row-major) values of any view.
std::vector<double> ref_product(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  const int64_t ac = a.shape()[1], bc = b.shape()[1];
  const int64_t M = ta ? a.shape()[1] : a.shape()[0], K = ta ? a.shape()[0] : a.shape()[1];
  const int64_t N = tb ? b.shape()[0] : b.shape()[1];
  std::vector<double> c(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        double x = ta ? av[size_t(k * ac + i)] : av[size_t(i * ac + k)];
        double y = tb ? bv[size_t(j * bc + k)] : bv[size_t(k * bc + j)];
        s += x * y;
      }
      c[size_t(i * N + j)] = s;
    }
  return c;
}

Tensor ref_matmul(const Tensor& a, const Tensor& b, bool ta = false, bool tb = false) {
  const int64_t M = ta ? a.shape()[1] : a.shape()[0], N = tb ? b.shape()[0] : b.shape()[1];
  return Tensor::from_vector(ref_product(a, b, ta, tb), {M, N});
}

Tensor ref_bmm(const Tensor& a, const Tensor& b, bool ta = false, bool tb = false) {
  const int64_t B = a.shape()[0];
  const int64_t M = ta ? a.shape()[2] : a.shape()[1], N = tb ? b.shape()[1] : b.shape()[2];
  std::vector<double> all;
  for (int64_t i = 0; i < B; ++i) {
    std::vector<double> c = ref_product(a.select(0, i), b.select(0, i), ta, tb);
    all.insert(all.end(), c.begin(), c.end());
  }
  return Tensor::from_vector(all, {B, M, N});
}

// A sum of K products of values in [-1, 1] carries ~K rounding errors.
void require_product_close(const Tensor& actual, const Tensor& expected, int64_t K) {
  if (actual.dtype() == DType::F32)
    test::require_close(actual, expected.to(DType::F32), 1e-5, 1e-6 + 4e-7 * double(K));
  else
    test::require_close(actual, expected.to(DType::F64), 1e-12, 1e-14 + 1e-14 * double(K));
}

// Stored shape of an operand read as [rows, cols] under a transpose flag.
Shape stored(int64_t rows, int64_t cols, bool trans) { return trans ? Shape{cols, rows} : Shape{rows, cols}; }

bool openblas_is_openmp_build() { return openblas_get_parallel() == 2; }

}  // namespace

// ---------------------------------------------------------------- matmul: values

TEST_CASE("matmul matches a naive triple loop on odd shapes", "[gemm]") {
  const MNK s = GENERATE(MNK{1, 1, 1}, MNK{7, 13, 5}, MNK{64, 3, 129}, MNK{2, 1, 9}, MNK{1, 17, 1}, MNK{33, 65, 17},
                         MNK{5, 1, 300});
  const DType dt = GENERATE(DType::F32, DType::F64);
  const uint64_t seed = GENERATE(1, 2);
  Tensor a = test::rand({s.M, s.K}, seed, dt), b = test::rand({s.K, s.N}, seed + 100, dt);
  Tensor c = backend::matmul(a, b);
  REQUIRE(c.shape() == Shape{s.M, s.N});
  REQUIRE(c.dtype() == dt);
  REQUIRE(c.is_contiguous());
  require_product_close(c, ref_matmul(a, b), s.K);
}

TEST_CASE("matmul reads all four transpose combinations correctly", "[gemm]") {
  const MNK s = GENERATE(MNK{7, 13, 5}, MNK{1, 4, 3}, MNK{16, 16, 16}, MNK{31, 2, 47});
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  Tensor a = test::rand(stored(s.M, s.K, ta), 11, dt), b = test::rand(stored(s.K, s.N, tb), 12, dt);
  Tensor c = backend::matmul(a, b, ta, tb);
  REQUIRE(c.shape() == Shape{s.M, s.N});
  require_product_close(c, ref_matmul(a, b, ta, tb), s.K);
}

TEST_CASE("matmul splits large products across threads without changing the result", "[gemm]") {
  // Above the split threshold, both by rows (M >= N) and by columns (M < N),
  // with sizes that are not multiples of the panel alignment.
  const MNK s = GENERATE(MNK{130, 70, 90}, MNK{70, 130, 90}, MNK{257, 33, 129}, MNK{35, 301, 64}, MNK{96, 96, 96});
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const DType dt = GENERATE(DType::F32, DType::F64);
  Tensor a = test::rand(stored(s.M, s.K, ta), 21, dt), b = test::rand(stored(s.K, s.N, tb), 22, dt);
  require_product_close(backend::matmul(a, b, ta, tb), ref_matmul(a, b, ta, tb), s.K);
}

TEST_CASE("matmul takes transposed views as operands without a copy changing the values", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  // a and b are column-major views: BLAS reads them through the transpose flag
  Tensor a = test::rand({9, 6}, 31, dt).transpose(0, 1);  // [6, 9]
  Tensor b = test::rand({4, 9}, 32, dt).transpose(0, 1);  // [9, 4]
  REQUIRE_FALSE(a.is_contiguous());
  require_product_close(backend::matmul(a, b), ref_matmul(a, b), 9);
  // a transposed view combined with the transpose flag reads the original layout
  require_product_close(backend::matmul(a, b.transpose(0, 1), false, true), ref_matmul(a, b), 9);
  require_product_close(backend::matmul(a.transpose(0, 1), b, true, false), ref_matmul(a, b), 9);
}

TEST_CASE("matmul takes sliced, gapped and broadcast operands", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t M = 11, N = 7, K = 13;
  Shape sa = stored(M, K, ta), sb = stored(K, N, tb);
  SECTION("row stride larger than the row (narrowed columns, offset storage)") {
    Tensor a = test::rand({sa[0], sa[1] + 5}, 41, dt).narrow(1, 3, sa[1]);
    Tensor b = test::rand({sb[0] + 2, sb[1] + 4}, 42, dt).narrow(0, 2, sb[0]).narrow(1, 1, sb[1]);
    require_product_close(backend::matmul(a, b, ta, tb), ref_matmul(a, b, ta, tb), K);
  }
  SECTION("every other column (no unit stride: copied first)") {
    Tensor a = test::rand({sa[0], 2 * sa[1]}, 43, dt).slice(1, 0, 2 * sa[1], 2);
    Tensor b = test::rand({2 * sb[0], 2 * sb[1]}, 44, dt).slice(0, 1, 2 * sb[0], 2).slice(1, 0, 2 * sb[1], 2);
    require_product_close(backend::matmul(a, b, ta, tb), ref_matmul(a, b, ta, tb), K);
  }
  SECTION("test::non_contiguous layouts") {
    Tensor a = test::non_contiguous(test::rand(sa, 45, dt)), b = test::non_contiguous(test::rand(sb, 46, dt));
    require_product_close(backend::matmul(a, b, ta, tb), ref_matmul(a, b, ta, tb), K);
  }
  SECTION("broadcast rows and columns (stride 0)") {
    Tensor a = test::rand({1, sa[1]}, 47, dt).expand(sa);
    Tensor b = test::rand({sb[0], 1}, 48, dt).expand(sb);
    require_product_close(backend::matmul(a, b, ta, tb), ref_matmul(a, b, ta, tb), K);
  }
}

TEST_CASE("matmul leaves its operands untouched and returns fresh storage", "[gemm]") {
  Tensor a = test::rand({5, 8}, 51), b = test::rand({8, 3}, 52);
  std::vector<float> a0 = a.to_vector<float>(), b0 = b.to_vector<float>();
  Tensor c = backend::matmul(a, b);
  REQUIRE(a.to_vector<float>() == a0);
  REQUIRE(b.to_vector<float>() == b0);
  REQUIRE(c.impl().storage != a.impl().storage);
  REQUIRE(c.impl().storage != b.impl().storage);
}

TEST_CASE("matmul of empty operands gives empty or zero results", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  SECTION("no rows") { REQUIRE(backend::matmul(Tensor::zeros({0, 4}, dt), test::rand({4, 3}, 1, dt)).shape() == Shape{0, 3}); }
  SECTION("no columns") { REQUIRE(backend::matmul(test::rand({2, 4}, 1, dt), Tensor::zeros({4, 0}, dt)).shape() == Shape{2, 0}); }
  SECTION("empty inner dimension sums to zero") {
    Tensor c = backend::matmul(Tensor::zeros({3, 0}, dt), Tensor::zeros({0, 2}, dt));
    REQUIRE(c.shape() == Shape{3, 2});
    test::require_close(c, std::vector<double>(6, 0.0));
  }
}

TEST_CASE("matmul of known small matrices gives the textbook product", "[gemm]") {
  Tensor a = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<double>({7, 8, 9, 10, 11, 12}, {3, 2});
  test::require_close(backend::matmul(a, b), {58, 64, 139, 154});
  test::require_close(backend::matmul(a, a, false, true), {14, 32, 32, 77});
  test::require_close(backend::matmul(a, a, true, false), {17, 22, 27, 22, 29, 36, 27, 36, 45});
}

TEST_CASE("matmul called from inside an OpenMP parallel region is correct", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  Tensor a = test::rand({150, 120}, 61, dt), b = test::rand({120, 140}, 62, dt);
  Tensor expected = ref_matmul(a, b);
  std::vector<Tensor> results(4);
#pragma omp parallel for num_threads(2) schedule(static)
  for (int i = 0; i < 4; ++i) results[size_t(i)] = backend::matmul(a, b, false, false);
  for (const Tensor& r : results) require_product_close(r, expected, 120);
}

TEST_CASE("matmul keeps OpenBLAS on one thread so OpenMP owns the cores", "[gemm]") {
  if (openblas_is_openmp_build()) {
    SUCCEED("the OpenMP build of OpenBLAS shares the OpenMP pool; nothing to pin");
    return;
  }
  const int before = openblas_get_num_threads();
  openblas_set_num_threads(2);
  Tensor a = test::rand({40, 30}, 71), b = test::rand({30, 20}, 72);
  require_product_close(backend::matmul(a, b), ref_matmul(a, b), 30);
  REQUIRE(openblas_get_num_threads() == 1);
  openblas_set_num_threads(before);
}

// ---------------------------------------------------------------- gemm_into

TEST_CASE("gemm_into computes alpha * op(a) @ op(b) + beta * out", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const double alpha = GENERATE(1.0, 0.5), beta = GENERATE(0.0, 1.0, -2.0);
  const MNK s = GENERATE(MNK{7, 13, 5}, MNK{90, 80, 70});
  Tensor a = test::rand(stored(s.M, s.K, ta), 81, dt), b = test::rand(stored(s.K, s.N, tb), 82, dt);
  Tensor out = test::rand({s.M, s.N}, 83, dt);
  std::vector<double> prod = ref_product(a, b, ta, tb), c0 = out.to_vector<double>();
  std::vector<double> expected(prod.size());
  for (size_t i = 0; i < prod.size(); ++i) expected[i] = alpha * prod[i] + beta * c0[i];
  backend::gemm_into(out, a, b, ta, tb, alpha, beta);
  require_product_close(out, Tensor::from_vector(expected, {s.M, s.N}), s.K);
}

TEST_CASE("gemm_into with beta 0 ignores NaN in the output buffer", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  Tensor a = test::rand({6, 4}, 91, dt), b = test::rand({4, 5}, 92, dt);
  Tensor out = Tensor::full({6, 5}, std::numeric_limits<double>::quiet_NaN(), dt);
  backend::gemm_into(out, a, b, false, false, 1.0, 0.0);
  require_product_close(out, ref_matmul(a, b), 4);
}

TEST_CASE("gemm_into writes through transposed, strided and aliased output views", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t M = 9, N = 6, K = 7;
  Tensor a = test::rand(stored(M, K, ta), 101, dt), b = test::rand(stored(K, N, tb), 102, dt);
  std::vector<double> prod = ref_product(a, b, ta, tb);
  auto check = [&](const Tensor& out, double alpha, double beta) {
    std::vector<double> c0 = out.to_vector<double>(), expected(prod.size());
    for (size_t i = 0; i < prod.size(); ++i) expected[i] = alpha * prod[i] + beta * c0[i];
    backend::gemm_into(out, a, b, ta, tb, alpha, beta);
    require_product_close(out, Tensor::from_vector(expected, {M, N}), K);
  };
  SECTION("column-major output (a transposed view)") {
    Tensor buf = test::rand({N, M}, 103, dt);
    check(buf.transpose(0, 1), 1.5, 0.5);
    REQUIRE(buf.shape() == Shape{N, M});
  }
  SECTION("output rows with a gap, leaving the gap alone") {
    Tensor buf = Tensor::full({M, N + 3}, 5.0, dt);
    check(buf.narrow(1, 0, N), 1.0, 1.0);
    test::require_close(buf.narrow(1, N, 3), std::vector<double>(size_t(M * 3), 5.0));
  }
  SECTION("output with no unit stride") {
    Tensor buf = test::rand({2 * M, 2 * N}, 104, dt);
    check(buf.slice(0, 0, 2 * M, 2).slice(1, 1, 2 * N, 2), -1.0, 2.0);
  }
}

TEST_CASE("gemm_into accumulates correctly when the output aliases an operand", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  // out = a @ b + out with out == a (square): BLAS must not read a half-written a.
  Tensor a = test::rand({8, 8}, 111, dt), b = test::rand({8, 8}, 112, dt);
  std::vector<double> prod = ref_product(a, b, false, false), a0 = a.to_vector<double>();
  for (size_t i = 0; i < prod.size(); ++i) prod[i] += a0[i];
  backend::gemm_into(a, a, b, false, false, 1.0, 1.0);
  require_product_close(a, Tensor::from_vector(prod, {8, 8}), 8);
}

TEST_CASE("gemm_into with an empty inner dimension scales the output by beta", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  Tensor out = Tensor::from_vector<double>({1, -2, 3, 4}, {2, 2}).to(dt);
  backend::gemm_into(out, Tensor::zeros({2, 0}, dt), Tensor::zeros({0, 2}, dt), false, false, 3.0, -0.5);
  test::require_close(out, {-0.5, 1, -1.5, -2});
  backend::gemm_into(out, Tensor::zeros({2, 0}, dt), Tensor::zeros({0, 2}, dt), false, false, 3.0, 0.0);
  test::require_close(out, {0, 0, 0, 0});
}

// ---------------------------------------------------------------- bmm

TEST_CASE("bmm matches a naive loop per batch element", "[gemm]") {
  // Small products run one per thread, large ones are split per product; batch
  // sizes that do and do not divide over two threads take different paths.
  const int64_t B = GENERATE(1, 2, 3, 5, 8);
  const MNK s = GENERATE(MNK{7, 13, 5}, MNK{1, 1, 1}, MNK{70, 90, 60});
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const DType dt = GENERATE(DType::F32, DType::F64);
  Shape sa = stored(s.M, s.K, ta), sb = stored(s.K, s.N, tb);
  Tensor a = test::rand({B, sa[0], sa[1]}, 121, dt), b = test::rand({B, sb[0], sb[1]}, 122, dt);
  Tensor c = backend::bmm(a, b, ta, tb);
  REQUIRE(c.shape() == Shape{B, s.M, s.N});
  REQUIRE(c.is_contiguous());
  require_product_close(c, ref_bmm(a, b, ta, tb), s.K);
}

TEST_CASE("bmm takes non-contiguous batches", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t B = 4, M = 6, N = 5, K = 7;
  Shape sa = stored(M, K, ta), sb = stored(K, N, tb);
  SECTION("batch dimension in the middle of the storage (attention heads)") {
    // stored [rows, B, cols] and permuted to [B, rows, cols]
    Tensor a = test::rand({sa[0], B, sa[1]}, 131, dt).permute({1, 0, 2});
    Tensor b = test::rand({sb[0], B, sb[1]}, 132, dt).permute({1, 0, 2});
    require_product_close(backend::bmm(a, b, ta, tb), ref_bmm(a, b, ta, tb), K);
  }
  SECTION("last two dims swapped inside a gapped buffer") {
    Tensor a = test::non_contiguous(test::rand({B, sa[0], sa[1]}, 133, dt));
    Tensor b = test::non_contiguous(test::rand({B, sb[0], sb[1]}, 134, dt));
    require_product_close(backend::bmm(a, b, ta, tb), ref_bmm(a, b, ta, tb), K);
  }
  SECTION("one matrix broadcast over the batch (stride 0)") {
    Tensor a = test::rand({B, sa[0], sa[1]}, 135, dt);
    Tensor b = test::rand({1, sb[0], sb[1]}, 136, dt).expand({B, sb[0], sb[1]});
    require_product_close(backend::bmm(a, b, ta, tb), ref_bmm(a, b, ta, tb), K);
  }
  SECTION("every other column (copied first)") {
    Tensor a = test::rand({B, sa[0], 2 * sa[1]}, 137, dt).slice(2, 0, 2 * sa[1], 2);
    Tensor b = test::rand({B, sb[0], 2 * sb[1]}, 138, dt).slice(2, 1, 2 * sb[1], 2);
    require_product_close(backend::bmm(a, b, ta, tb), ref_bmm(a, b, ta, tb), K);
  }
}

TEST_CASE("bmm of empty batches and empty inner dimensions", "[gemm]") {
  REQUIRE(backend::bmm(Tensor::zeros({0, 2, 3}), Tensor::zeros({0, 3, 4})).shape() == Shape{0, 2, 4});
  Tensor c = backend::bmm(Tensor::zeros({2, 2, 0}), Tensor::zeros({2, 0, 3}));
  REQUIRE(c.shape() == Shape{2, 2, 3});
  test::require_close(c, std::vector<double>(12, 0.0));
}

TEST_CASE("bmm is deterministic across calls", "[gemm]") {
  Tensor a = test::rand({6, 40, 50}, 141), b = test::rand({6, 50, 30}, 142);
  REQUIRE(backend::bmm(a, b).to_vector<float>() == backend::bmm(a, b).to_vector<float>());
}

// ---------------------------------------------------------------- errors

TEST_CASE("matmul rejects mismatched shapes with a message naming both", "[gemm]") {
  Tensor a = Tensor::zeros({3, 4}), b = Tensor::zeros({5, 6});
  REQUIRE_THROWS_WITH(backend::matmul(a, b), "matmul: inner dimensions differ: [3, 4] @ [5, 6]");
  REQUIRE_THROWS_WITH(backend::matmul(a, b, true, false), "matmul: inner dimensions differ: [3, 4]^T @ [5, 6]");
  REQUIRE_THROWS_WITH(backend::matmul(a, Tensor::zeros({6, 4}), false, false), Catch::Contains("[6, 4]"));
  REQUIRE_NOTHROW(backend::matmul(a, Tensor::zeros({6, 4}), false, true));
  REQUIRE_THROWS_WITH(matmul(a, b), Catch::Contains("matmul: inner dimensions differ"));
}

TEST_CASE("matmul rejects operands that are not matrices", "[gemm]") {
  REQUIRE_THROWS_WITH(backend::matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({4, 5})),
                      "matmul: expected 2-D operands, got [2, 3, 4] @ [4, 5]");
  REQUIRE_THROWS_WITH(backend::matmul(Tensor::zeros({4}), Tensor::zeros({4, 5})), Catch::Contains("matmul"));
  REQUIRE_THROWS_WITH(backend::bmm(Tensor::zeros({3, 4}), Tensor::zeros({4, 5})),
                      Catch::Contains("bmm: expected 3-D operands"));
}

TEST_CASE("matmul rejects mixed and non-floating dtypes", "[gemm]") {
  REQUIRE_THROWS_WITH(backend::matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}, DType::F64)),
                      Catch::Contains("matmul: dtypes differ: f32 @ f64"));
  REQUIRE_THROWS_WITH(backend::matmul(Tensor::zeros({2, 3}, DType::I64), Tensor::zeros({3, 2}, DType::I64)),
                      Catch::Contains("matmul: expected f32 or f64"));
  REQUIRE_THROWS_WITH(backend::bmm(Tensor::zeros({1, 2, 3}), Tensor::zeros({1, 3, 2}, DType::F64)),
                      Catch::Contains("bmm: dtypes differ"));
  REQUIRE_THROWS_WITH(backend::matmul(Tensor(), Tensor::zeros({3, 2})), Catch::Contains("matmul"));
}

TEST_CASE("bmm rejects mismatched batches and inner dimensions", "[gemm]") {
  REQUIRE_THROWS_WITH(backend::bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 5})),
                      "bmm: batch sizes differ: [2, 3, 4] @ [3, 4, 5]");
  REQUIRE_THROWS_WITH(backend::bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 5, 4})),
                      "bmm: inner dimensions differ: [2, 3, 4] @ [2, 5, 4]");
  REQUIRE_NOTHROW(backend::bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 5, 4}), false, true));
}

TEST_CASE("gemm_into rejects an output of the wrong shape or dtype", "[gemm]") {
  Tensor a = Tensor::zeros({3, 4}), b = Tensor::zeros({4, 5});
  REQUIRE_THROWS_WITH(backend::gemm_into(Tensor::zeros({5, 3}), a, b, false, false, 1, 0),
                      "gemm_into: out has shape [5, 3], expected [3, 5] for [3, 4] @ [4, 5]");
  REQUIRE_THROWS_WITH(backend::gemm_into(Tensor::zeros({3, 5}, DType::F64), a, b, false, false, 1, 0),
                      Catch::Contains("gemm_into: out"));
  REQUIRE_THROWS_WITH(backend::gemm_into(Tensor::zeros({3, 5}), a, Tensor::zeros({3, 5}), false, false, 1, 0),
                      Catch::Contains("gemm_into: inner dimensions differ"));
}

TEST_CASE("linear rejects inconsistent input, weight and bias", "[gemm]") {
  Tensor w = Tensor::zeros({6, 4});
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 5}), w),
                      "linear: x [2, 5] has 5 features, weight [6, 4] expects 4");
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 4}), w, Tensor::zeros({4})),
                      "linear: bias [4] does not match weight [6, 4] (expected [6])");
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 4}), Tensor::zeros({6, 4, 1})), Catch::Contains("linear: expected"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 4}), Tensor::zeros({6, 4}, DType::F64)),
                      Catch::Contains("linear: dtypes differ"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros({2, 4}), w, Tensor::zeros({6}, DType::F64)),
                      Catch::Contains("linear: dtypes differ"));
}

// ---------------------------------------------------------------- linear: values

namespace {
// x[..., in] @ w[out, in]^T + bias in double.
Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t in = w.shape()[1], out = w.shape()[0], rows = x.numel() / std::max<int64_t>(in, 1);
  std::vector<double> y = ref_product(x.reshape({rows, in}), w, false, true);
  if (bias.defined()) {
    std::vector<double> bv = bias.to_vector<double>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < out; ++j) y[size_t(r * out + j)] += bv[size_t(j)];
  }
  Shape ys = x.shape();
  ys.back() = out;
  return Tensor::from_vector(y, ys);
}
}  // namespace

TEST_CASE("linear matches x @ weight^T + bias over leading dimensions", "[gemm]") {
  const DType dt = GENERATE(DType::F32, DType::F64);
  const bool with_bias = GENERATE(false, true);
  SECTION("2-D input") {
    Tensor x = test::rand({7, 13}, 151, dt), w = test::rand({5, 13}, 152, dt);
    Tensor b = with_bias ? test::rand({5}, 153, dt) : Tensor();
    require_product_close(linear(x, w, b), ref_linear(x, w, b), 13);
  }
  SECTION("3-D input, large enough to split across threads") {
    Tensor x = test::rand({3, 50, 64}, 154, dt), w = test::rand({96, 64}, 155, dt);
    Tensor b = with_bias ? test::rand({96}, 156, dt) : Tensor();
    Tensor y = linear(x, w, b);
    REQUIRE(y.shape() == Shape{3, 50, 96});
    require_product_close(y, ref_linear(x, w, b), 64);
  }
  SECTION("1-D input") {
    Tensor x = test::rand({9}, 157, dt), w = test::rand({4, 9}, 158, dt);
    Tensor b = with_bias ? test::rand({4}, 159, dt) : Tensor();
    Tensor y = linear(x, w, b);
    REQUIRE(y.shape() == Shape{4});
    require_product_close(y, ref_linear(x, w, b), 9);
  }
  SECTION("non-contiguous input, weight and bias") {
    Tensor x = test::non_contiguous(test::rand({2, 6, 5}, 160, dt));
    Tensor w = test::non_contiguous(test::rand({8, 5}, 161, dt));
    Tensor b = with_bias ? test::non_contiguous(test::rand({8}, 162, dt)) : Tensor();
    require_product_close(linear(x, w, b), ref_linear(x, w, b), 5);
  }
  SECTION("no rows") {
    Tensor x = Tensor::zeros({0, 3, 4}, dt), w = test::rand({2, 4}, 163, dt);
    Tensor b = with_bias ? test::rand({2}, 164, dt) : Tensor();
    REQUIRE(linear(x, w, b).shape() == Shape{0, 3, 2});
  }
}

// ---------------------------------------------------------------- gradients

TEST_CASE("matmul gradients pass gradcheck for every transpose combination", "[gemm]") {
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const bool noncontig = GENERATE(false, true);
  const uint64_t seed = GENERATE(1, 2);
  Tensor a = test::grad_input(stored(4, 5, ta), seed, noncontig);
  Tensor b = test::grad_input(stored(5, 3, tb), seed + 10, noncontig);
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b});
}

TEST_CASE("matmul gradients flow only to the inputs that need them", "[gemm]") {
  Tensor a = test::grad_input({3, 4}, 171);
  Tensor b = test::rand({4, 2}, 172, DType::F64);  // constant
  Tensor y = matmul(a, b);
  y.backward(Tensor::ones({3, 2}, DType::F64));
  REQUIRE_FALSE(b.grad().defined());
  // d/dA sum(A B) = ones @ B^T: every row holds the row sums of B
  std::vector<double> bv = b.to_vector<double>(), expected;
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 4; ++k) expected.push_back(bv[size_t(2 * k)] + bv[size_t(2 * k + 1)]);
  test::require_close(a.grad(), expected);
}

TEST_CASE("matmul without inputs that need grad records nothing", "[gemm]") {
  Tensor y = matmul(test::rand({2, 3}, 1), test::rand({3, 2}, 2));
  REQUIRE(y.grad_fn() == nullptr);
  Tensor a = test::grad_input({2, 3}, 3);
  REQUIRE(matmul(a, test::rand({3, 2}, 4, DType::F64)).grad_fn() != nullptr);
}

TEST_CASE("bmm gradients pass gradcheck", "[gemm]") {
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const bool noncontig = GENERATE(false, true);
  Tensor a = test::grad_input({2, ta ? 4 : 3, ta ? 3 : 4}, 181, noncontig);
  Tensor b = test::grad_input({2, tb ? 2 : 4, tb ? 4 : 2}, 182, noncontig);
  test::require_gradcheck([&](const std::vector<Tensor>& in) { return bmm(in[0], in[1], ta, tb); }, {a, b});
}

TEST_CASE("linear gradients pass gradcheck with and without bias", "[gemm]") {
  const bool noncontig = GENERATE(false, true);
  SECTION("2-D input with bias") {
    Tensor x = test::grad_input({4, 3}, 191, noncontig), w = test::grad_input({5, 3}, 192, noncontig);
    Tensor b = test::grad_input({5}, 193, noncontig);
    test::require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  }
  SECTION("3-D input without bias") {
    Tensor x = test::grad_input({2, 3, 4}, 194, noncontig), w = test::grad_input({2, 4}, 195, noncontig);
    test::require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w});
  }
  SECTION("3-D input with bias") {
    Tensor x = test::grad_input({2, 2, 3}, 196, noncontig), w = test::grad_input({4, 3}, 197, noncontig);
    Tensor b = test::grad_input({4}, 198, noncontig);
    test::require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  }
  SECTION("1-D input") {
    Tensor x = test::grad_input({3}, 199, noncontig), w = test::grad_input({2, 3}, 200, noncontig);
    Tensor b = test::grad_input({2}, 201, noncontig);
    test::require_gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  }
}

TEST_CASE("linear bias gradient is the column sum of the output gradient", "[gemm]") {
  // Large enough for the parallel column-block path and a partial last block.
  const DType dt = GENERATE(DType::F32, DType::F64);
  const int64_t rows = 300, out = 200;
  Tensor x = test::rand({rows, 3}, 211, dt), w = test::rand({out, 3}, 212, dt);
  Tensor b = test::rand({out}, 213, dt).set_requires_grad();
  Tensor g = test::rand({rows, out}, 214, dt);
  linear(x, w, b).backward(g);
  std::vector<double> gv = g.to_vector<double>(), expected(size_t(out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) expected[size_t(j)] += gv[size_t(r * out + j)];
  test::require_close(b.grad(), Tensor::from_vector(expected, {out}).to(dt), 1e-5, 1e-5);
  REQUIRE_FALSE(w.grad().defined());
  REQUIRE_FALSE(x.grad().defined());
}

TEST_CASE("linear weight gradient matches grad^T @ x on a large input", "[gemm]") {
  Tensor x = test::rand({3, 40, 70}, 221, DType::F64), w = test::grad_input({90, 70}, 222);
  Tensor g = test::rand({3, 40, 90}, 223, DType::F64);
  linear(x, w).backward(g);
  Tensor expected = ref_matmul(g.reshape({120, 90}), x.reshape({120, 70}), true, false);
  require_product_close(w.grad(), expected, 120);
}
