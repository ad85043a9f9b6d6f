// Matrix products on OpenBLAS. Threading policy: OpenBLAS is used as a
// single-threaded kernel and Strata's own OpenMP pool splits large products
// into panels. Debian's default libopenblas is the pthread build, whose
// private worker pool spins after every call and fights the OpenMP threads of
// the element-wise ops that run between GEMMs (a 512^3 GEMM followed by a
// parallel tanh took 1.9x the sum of both alone), and which oversubscribes the
// cores when a GEMM is called from inside an OpenMP region. Keeping every
// thread on one pool removes both problems at no cost in GEMM speed (see
// docs/performance.md, "GEMM (CPU)").
#include "strata/backend/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <mutex>

#include "strata/backend/blas_layout.h"
#include "strata/backend/gemm_operands.h"
#include "strata/core/dispatch.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/gemm.h"
#include "strata/backend/device_dispatch.h"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace strata::backend {

namespace {

// Products smaller than this (M*N*K) run on one thread: below it the panel
// split costs more than it gains (OpenBLAS uses the same cut-off, 4 * 65536).
constexpr int64_t kSplitWork = 262144;
// Panel boundaries are multiples of this so every panel keeps whole register
// blocks of the OpenBLAS micro-kernels.
constexpr int64_t kPanelAlign = 16;

int pool_threads() {
#ifdef _OPENMP
  // A call from inside a parallel region must not fan out again: the caller's
  // team already owns the cores.
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

// Pins OpenBLAS to one thread unless it is the OpenMP build (openblas_get_parallel
// 2), which already runs single-threaded inside our parallel regions and whose
// openblas_set_num_threads would rewrite the program-wide OpenMP thread count.
// Checked on every call because a program may raise the count again (the GEMM
// benchmark does, to time OpenBLAS's own threading).
void blas_single_threaded() {
  if (openblas_get_parallel() == 2 || openblas_get_num_threads() == 1) return;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// C[M,N] = alpha * op(A) @ op(B) + beta * C on `threads` threads: the larger of
// M and N is cut into one panel per thread, each a single-threaded BLAS call.
// op(A) row i starts at A + i*lda (or A + i when transposed); op(B) column j
// at B + j (or B + j*ldb).
template <class T>
void gemm_panels(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, T beta, T* C, int64_t ldc, int threads) {
  const bool by_rows = M >= N;
  const int64_t D = by_rows ? M : N;
  if (threads <= 1 || M * N * K < kSplitWork || D < 2 * kPanelAlign) {
    blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int64_t panels = std::min<int64_t>(threads, D / kPanelAlign);
  const int64_t chunk = ((D + panels - 1) / panels + kPanelAlign - 1) / kPanelAlign * kPanelAlign;
#pragma omp parallel for schedule(static, 1) num_threads(int(panels))
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t s = p * chunk, e = std::min(D, s + chunk);
    if (s >= e) continue;
    if (by_rows)
      blas(ta, tb, e - s, N, K, alpha, A + (ta ? s : s * lda), lda, B, ldb, beta, C + s * ldc, ldc);
    else
      blas(ta, tb, M, e - s, K, alpha, A, lda, B + (tb ? s * ldb : s), ldb, beta, C + s, ldc);
  }
}

// An operand ready for BLAS: the tensor that holds the data (the input itself,
// or a contiguous copy when its layout is unusable), the leading dimension and
// the effective transpose flag (the op's flag flipped for column-major views).
// Works on the last two dims, so it also serves a batch of matrices.
struct Operand {
  Tensor data;
  int64_t ld = 0;
  bool trans = false;
  int64_t batch_stride = 0;
};

Operand prepare(const Tensor& t, bool trans) {
  Operand o;
  const int64_t n = t.dim();
  bool flipped = false;
  o.data = t;
  if (!blas_layout(t.shape()[n - 2], t.shape()[n - 1], t.strides()[n - 2], t.strides()[n - 1], o.ld, flipped)) {
    o.data = t.clone();
    blas_layout(t.shape()[n - 2], t.shape()[n - 1], o.data.strides()[n - 2], o.data.strides()[n - 1], o.ld,
                flipped);
  }
  o.trans = trans != flipped;
  o.batch_stride = n == 3 ? o.data.strides()[0] : 0;
  return o;
}

using Dims = GemmDims;
std::string operand_str(const Tensor& t, bool trans) { return gemm_operand_str(t, trans); }

// Ranks, device, dtypes and inner dimensions. Returns (M, N, K).
Dims check_operands(const char* op, const Tensor& a, const Tensor& b, bool ta, bool tb, int64_t rank) {
  check_gemm_ranks(op, a, b, ta, tb, rank);
  STRATA_CHECK(a.device().is_cpu() && b.device().is_cpu())
      << op << ": operands on " << a.device().str() << " and " << b.device().str() << " need the CUDA backend";
  STRATA_CHECK(a.dtype() == b.dtype()) << op << ": dtypes differ: " << dtype_name(a.dtype()) << " @ "
                                       << dtype_name(b.dtype()) << " (" << operand_str(a, ta) << " @ "
                                       << operand_str(b, tb) << ")";
  STRATA_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::F64)
      << op << ": expected f32 or f64 operands, got " << dtype_name(a.dtype());
  return gemm_dims(op, a, b, ta, tb, rank, "BLAS");
}

// out[M,N] (row-major, leading dimension ldc) = alpha * op(a) @ op(b) + beta * out.
void gemm_rowmajor(const Tensor& out, int64_t ldc, const Tensor& a, const Tensor& b, bool ta, bool tb, Dims d,
                   double alpha, double beta) {
  if (d.M == 0 || d.N == 0) return;
  blas_single_threaded();
  if (d.K == 0) {  // an empty sum, which BLAS would reject for its zero leading dimensions
    dispatch_float(out.dtype(), "gemm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* c = out.data<T>();
      for (int64_t i = 0; i < d.M; ++i)
        for (int64_t j = 0; j < d.N; ++j) c[i * ldc + j] = beta == 0 ? T(0) : T(beta) * c[i * ldc + j];
    });
    return;
  }
  Operand oa = prepare(a, ta), ob = prepare(b, tb);
  dispatch_float(out.dtype(), "gemm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gemm_panels<T>(oa.trans, ob.trans, d.M, d.N, d.K, T(alpha), oa.data.template data<T>(), oa.ld,
                   ob.data.template data<T>(), ob.ld, T(beta), out.data<T>(), ldc, pool_threads());
  });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("matmul", {a, b})) return cuda::matmul(a, b, trans_a, trans_b);
#endif
  Dims d = check_operands("matmul", a, b, trans_a, trans_b, 2);
  Tensor out = Tensor::empty({d.M, d.N}, a.dtype());
  gemm_rowmajor(out, d.N, a, b, trans_a, trans_b, d, 1.0, 0.0);
  return out;
}

void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
               double beta) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("gemm_into", {out, a, b})) return cuda::gemm_into(out, a, b, trans_a, trans_b, alpha, beta);
#endif
  Dims d = check_operands("gemm_into", a, b, trans_a, trans_b, 2);
  STRATA_CHECK(out.defined() && out.device().is_cpu() && out.dtype() == a.dtype())
      << "gemm_into: out " << out.str() << " must be a CPU tensor of dtype " << dtype_name(a.dtype());
  STRATA_CHECK(out.dim() == 2 && out.shape()[0] == d.M && out.shape()[1] == d.N)
      << "gemm_into: out has shape " << shape_str(out.shape()) << ", expected [" << d.M << ", " << d.N
      << "] for " << operand_str(a, trans_a) << " @ " << operand_str(b, trans_b);
  int64_t ldc = 0;
  bool col_major = false;
  const bool aliased = out.impl().storage == a.impl().storage || out.impl().storage == b.impl().storage;
  if (!aliased && blas_layout(d.M, d.N, out.strides()[0], out.strides()[1], ldc, col_major)) {
    if (!col_major) {
      gemm_rowmajor(out, ldc, a, b, trans_a, trans_b, d, alpha, beta);
    } else {  // out^T[N,M] is row-major: out^T = op(b)^T @ op(a)^T
      gemm_rowmajor(out, ldc, b, a, !trans_b, !trans_a, Dims{d.N, d.M, d.K}, alpha, beta);
    }
    return;
  }
  // BLAS needs a row-major destination that overlaps no operand: work on a copy.
  Tensor tmp = out.clone();
  gemm_rowmajor(tmp, d.N, a, b, trans_a, trans_b, d, alpha, beta);
  out.copy_(tmp);
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
#ifdef STRATA_WITH_CUDA
  if (on_cuda("bmm", {a, b})) return cuda::bmm(a, b, trans_a, trans_b);
#endif
  Dims d = check_operands("bmm", a, b, trans_a, trans_b, 3);
  const int64_t batch = a.shape()[0];
  Tensor out = Tensor::empty({batch, d.M, d.N}, a.dtype());
  if (batch == 0 || d.M == 0 || d.N == 0) return out;
  if (d.K == 0) {
    out.fill_(0.0);
    return out;
  }
  blas_single_threaded();
  Operand oa = prepare(a, trans_a), ob = prepare(b, trans_b);
  const int threads = pool_threads();
  // One product per thread when the batch divides well over the threads or
  // the products are too small to split; otherwise split each product.
  const bool over_batch = threads > 1 && batch > 1 &&
                          (batch % threads == 0 || batch >= 4 * threads || d.M * d.N * d.K < kSplitWork);
  dispatch_float(a.dtype(), "bmm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = oa.data.template data<T>();
    const T* pb = ob.data.template data<T>();
    T* pc = out.data<T>();
    const int64_t sc = d.M * d.N;
    if (over_batch) {
#pragma omp parallel for schedule(static) num_threads(threads)
      for (int64_t i = 0; i < batch; ++i)
        blas(oa.trans, ob.trans, d.M, d.N, d.K, T(1), pa + i * oa.batch_stride, oa.ld, pb + i * ob.batch_stride,
             ob.ld, T(0), pc + i * sc, d.N);
    } else {
      for (int64_t i = 0; i < batch; ++i)
        gemm_panels<T>(oa.trans, ob.trans, d.M, d.N, d.K, T(1), pa + i * oa.batch_stride, oa.ld,
                       pb + i * ob.batch_stride, ob.ld, T(0), pc + i * sc, d.N, threads);
    }
  });
  return out;
}

}  // namespace strata::backend
