// GEMMs on cuBLASLt, with classic cuBLAS as the fallback. cuBLAS is
// column-major and Strata row-major: a row-major matrix X[r, c] with leading
// dimension ld is the column-major matrix X^T[c, r] with the same ld. So
// C[M,N] = op(A) op(B) is computed as the column-major C^T[N,M] =
// op(B)^T op(A)^T: cuBLAS's first operand is our b, its second our a, and the
// row-major transpose flags carry over unchanged.
#include "strata/backend/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <unordered_map>

#include "strata/backend/blas_layout.h"
#include "strata/backend/gemm_operands.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/backend/functors.h"
#include "strata/core/dispatch.h"

namespace strata::backend::cuda {

namespace {

namespace sc = ::strata::cuda;

// ---------------------------------------------------------------- small kernels

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }

// dst = src element by element over two views of one shape; E is an unsigned
// integer of the element size, so the copy is bit-exact for every dtype.
template <class E>
__global__ void copy_kernel(E* dst, const E* src, sc::StridedIndexer<2> ix, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_step()) {
    int64_t off[2];
    ix.offsets(i, off);
    dst[off[0]] = src[off[1]];
  }
}

void copy_into(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const sc::StridedIndexer<2> ix = sc::make_indexer<2>({&dst, &src});
  auto launch = [&](auto tag) {
    using E = typename decltype(tag)::type;
    copy_kernel<E><<<sc::blocks_for(n), sc::kThreads, 0, sc::compute_stream()>>>(sc::storage_ptr<E>(dst),
                                                                                 sc::storage_ptr<E>(src), ix, n);
  };
  switch (dtype_size(dst.dtype())) {
    case 2: launch(TypeTag<uint16_t>{}); break;
    case 4: launch(TypeTag<uint32_t>{}); break;
    case 8: launch(TypeTag<uint64_t>{}); break;
    default: STRATA_FAIL() << "gemm: cannot copy elements of " << dst.str();
  }
  STRATA_KERNEL_CHECK();
}

// A contiguous copy on the same GPU (local so the GEMMs do not depend on the
// GPU path of Tensor::contiguous()).
Tensor contiguous_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy_into(out, t);
  return out;
}

// v = beta * v over any view; beta == 0 writes zeros without reading v (BLAS
// semantics: NaN in an output scaled by 0 does not survive).
template <class T>
__global__ void scale_kernel(T* base, sc::StridedIndexer<1> ix, int64_t n, double beta) {
  using C = sc::compute_t<T>;
  for (int64_t i = first_index(); i < n; i += grid_step()) {
    int64_t off[1];
    ix.offsets(i, off);
    T* p = base + off[0];
    *p = sc::store_cast<T>(beta == 0 ? C(0) : C(beta) * sc::load(p));
  }
}

void scale_into(const Tensor& t, double beta) {
  const int64_t n = t.numel();
  if (n == 0) return;
  const sc::StridedIndexer<1> ix = sc::make_indexer<1>({&t});
  dispatch_floating(t.dtype(), "gemm_into", [&](auto tag) {
    using T = typename decltype(tag)::type;
    scale_kernel<T><<<sc::blocks_for(n), sc::kThreads, 0, sc::compute_stream()>>>(sc::storage_ptr<T>(t), ix, n,
                                                                                  beta);
  });
  STRATA_KERNEL_CHECK();
}

// out[r, j] = bias[j * bstride] for a contiguous out[rows, n].
template <class T>
__global__ void fill_rows_kernel(T* out, const T* bias, int64_t bstride, int64_t n, int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_step()) out[i] = bias[(i % n) * bstride];
}

// In place on a contiguous buffer, with the element-wise relu's semantics.
template <class T>
__global__ void relu_kernel(T* p, int64_t total) {
  for (int64_t i = first_index(); i < total; i += grid_step()) p[i] = sc::store_cast<T>(functors::Relu{}(sc::load(p + i)));
}

// Values in [-1, 1) from an integer hash of the index, for benchmark operands.
template <class T>
__global__ void bench_fill_kernel(T* p, int64_t total, uint32_t seed) {
  for (int64_t i = first_index(); i < total; i += grid_step()) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    const float v = float(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    p[i] = sc::store_cast<T>(sc::compute_t<T>(v));
  }
}

// ---------------------------------------------------------------- operand layouts

// An operand ready for cuBLAS: the tensor holding the data (the input or a
// contiguous copy), the pointer to its first element, the leading dimension,
// the effective transpose flag (the op's flag flipped for a column-major
// view) and the batch stride (0 for a single matrix).
struct Operand {
  Tensor data;
  const void* ptr = nullptr;
  int64_t ld = 0;
  bool trans = false;
  int64_t batch_stride = 0;
};

Operand prepare(const Tensor& t, bool trans) {
  const int64_t n = t.dim();
  const int64_t rows = t.shape()[size_t(n - 2)], cols = t.shape()[size_t(n - 1)];
  const bool batched = n == 3 && t.shape()[0] > 1;
  Operand o;
  o.data = t;
  bool flipped = false;
  bool ok = blas_layout(rows, cols, t.strides()[size_t(n - 2)], t.strides()[size_t(n - 1)], o.ld, flipped);
  if (batched && t.strides()[0] < 0) ok = false;  // cuBLAS batch strides are offsets forward
  if (!ok) {
    o.data = contiguous_copy(t);
    blas_layout(rows, cols, o.data.strides()[size_t(n - 2)], o.data.strides()[size_t(n - 1)], o.ld, flipped);
  }
  o.trans = trans != flipped;
  o.batch_stride = batched ? o.data.strides()[0] : 0;
  o.ptr = o.data.raw_data();
  return o;
}

using Dims = GemmDims;
std::string operand_str(const Tensor& t, bool trans) { return gemm_operand_str(t, trans); }

bool gpu_float(DType dt) {
  return dt == DType::F32 || dt == DType::F64 || dt == DType::F16 || dt == DType::BF16;
}

// Ranks, devices, dtypes and inner dimensions; returns (M, N, K).
Dims check_operands(const char* op, const Tensor& a, const Tensor& b, bool ta, bool tb, int64_t rank) {
  check_gemm_ranks(op, a, b, ta, tb, rank);
  STRATA_CHECK(a.device().is_cuda() && a.device() == b.device())
      << op << ": operands on " << a.device().str() << " and " << b.device().str() << " must be on one GPU";
  STRATA_CHECK(a.dtype() == b.dtype()) << op << ": dtypes differ: " << dtype_name(a.dtype()) << " @ "
                                       << dtype_name(b.dtype()) << " (" << operand_str(a, ta) << " @ "
                                       << operand_str(b, tb) << ")";
  STRATA_CHECK(gpu_float(a.dtype())) << op << ": expected f32, f64, f16 or bf16 operands, got "
                                     << dtype_name(a.dtype());
  const Dims d = gemm_dims(op, a, b, ta, tb, rank, "cuBLAS");
  STRATA_CHECK(rank != 3 || a.shape()[0] <= INT_MAX)
      << op << ": batch of " << a.shape()[0] << " exceeds the cuBLAS interface";
  return d;
}

// ---------------------------------------------------------------- one GEMM call

// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] for b < batch, all
// row-major in Strata's terms (see the file comment for the mapping).
struct Gemm {
  DType dt = DType::F32;
  int64_t M = 0, N = 0, K = 0, batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  bool ta = false;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  bool tb = false;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  double alpha = 1, beta = 0;
  const void* bias = nullptr;  // [N], contiguous, 16-byte aligned: BIAS epilogue (single matrix only)
  bool relu = false;           // RELU epilogue
};

Gemm make_gemm(DType dt, Dims d, const Operand& a, const Operand& b, void* c, int64_t ldc, double alpha,
               double beta) {
  Gemm g;
  g.dt = dt;
  g.M = d.M;
  g.N = d.N;
  g.K = d.K;
  g.a = a.ptr;
  g.lda = a.ld;
  g.stride_a = a.batch_stride;
  g.ta = a.trans;
  g.b = b.ptr;
  g.ldb = b.ld;
  g.stride_b = b.batch_stride;
  g.tb = b.trans;
  g.c = c;
  g.ldc = ldc;
  g.alpha = alpha;
  g.beta = beta;
  return g;
}

cudaDataType_t cuda_dtype(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: break;
  }
  STRATA_FAIL() << "gemm: no cuBLAS type for " << dtype_name(dt);
  return CUDA_R_32F;
}

// cuBLAS's operands: op flags and stored column-major shapes. cuBLAS's A is our
// b: with our flag clear it is b^T stored as [N, K]; set, as [K, N]. cuBLAS's B
// is our a: [K, M] or [M, K].
cublasOperation_t op_of(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Last element + 1 of one column-major matrix [rows, cols] with leading dim ld.
int64_t extent(int64_t rows, int64_t cols, int64_t ld) { return ld * (cols - 1) + rows; }

// Largest power of two (up to 256) dividing the address: cuBLASLt's heuristic
// assumes 256-byte aligned buffers unless told otherwise, and views into a
// buffer (expert slices, narrowed rows) are often less aligned.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// Alignment that every matrix of a strided batch keeps: matrix i starts at
// p + i * stride elements, so the batch step in bytes limits it as well (odd
// [B, M, K] products of 16-bit data have steps of 2 bytes). The minimum
// alignment preferences only describe the pointer passed in, so fold it in.
uint32_t batch_alignment(const void* p, int64_t batch, int64_t stride, DType dt) {
  uint32_t al = alignment_of(p);
  if (batch > 1) {
    const uint64_t step = uint64_t(stride) * uint64_t(dtype_size(dt));
    while (al > 1 && step % al != 0) al /= 2;
  }
  return al;
}

// RAII for the cuBLASLt descriptors (created per call: host-only and cheap).
struct LtDesc {
  cublasLtMatmulDesc_t h = nullptr;
  LtDesc() = default;
  LtDesc(const LtDesc&) = delete;
  LtDesc& operator=(const LtDesc&) = delete;
  ~LtDesc() {
    if (h) cublasLtMatmulDescDestroy(h);
  }
};
struct LtLayout {
  cublasLtMatrixLayout_t h = nullptr;
  LtLayout() = default;
  LtLayout(const LtLayout&) = delete;
  LtLayout& operator=(const LtLayout&) = delete;
  ~LtLayout() {
    if (h) cublasLtMatrixLayoutDestroy(h);
  }
};
struct LtPref {
  cublasLtMatmulPreference_t h = nullptr;
  LtPref() = default;
  LtPref(const LtPref&) = delete;
  LtPref& operator=(const LtPref&) = delete;
  ~LtPref() {
    if (h) cublasLtMatmulPreferenceDestroy(h);
  }
};

void make_layout(LtLayout& l, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                 int64_t stride) {
  STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l.h, t, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    STRATA_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    STRATA_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l.h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

// Heuristic results, cached per everything that went into the query.
struct AlgoKey {
  std::array<int64_t, 20> v;
  bool operator==(const AlgoKey& o) const { return v == o.v; }
};
struct AlgoKeyHash {
  size_t operator()(const AlgoKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h ^= size_t(x) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
  }
};
struct AlgoEntry {
  bool found = false;  // false: cuBLASLt offered nothing, use classic cuBLAS
  cublasLtMatmulAlgo_t algo{};
};
std::mutex g_cache_mu;
std::unordered_map<AlgoKey, AlgoEntry, AlgoKeyHash>& algo_cache() {
  static auto* m = new std::unordered_map<AlgoKey, AlgoEntry, AlgoKeyHash>();  // never destroyed: see context.cu
  return *m;
}

// The cuBLASLt path (f32/f16/bf16, fp32 accumulation). Returns false, having
// done nothing, when cuBLASLt has no algorithm for the problem.
bool run_lt(const Gemm& g) {
  sc::Context& ctx = sc::context();
  const cudaDataType_t t = cuda_dtype(g.dt);
  const cublasOperation_t op_a = op_of(g.tb), op_b = op_of(g.ta);
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  if (g.bias) epi = g.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  else if (g.relu) epi = CUBLASLT_EPILOGUE_RELU;

  // CUBLAS_COMPUTE_32F is plain fp32 (TF32 would need CUBLAS_COMPUTE_32F_FAST_TF32).
  LtDesc desc;
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.h, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (epi != CUBLASLT_EPILOGUE_DEFAULT)
    STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (g.bias) {
    // The bias runs along cuBLAS's rows (our N columns) and has the output's type.
    const int32_t bias_type = int32_t(t);
    STRATA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
    STRATA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  LtLayout la, lb, lc;
  make_layout(la, t, g.tb ? g.K : g.N, g.tb ? g.N : g.K, g.ldb, g.batch, g.stride_b);  // our b
  make_layout(lb, t, g.ta ? g.M : g.K, g.ta ? g.K : g.M, g.lda, g.batch, g.stride_a);  // our a
  make_layout(lc, t, g.N, g.M, g.ldc, g.batch, g.stride_c);

  const uint32_t al_a = batch_alignment(g.b, g.batch, g.stride_b, g.dt),
                 al_b = batch_alignment(g.a, g.batch, g.stride_a, g.dt),
                 al_c = batch_alignment(g.c, g.batch, g.stride_c, g.dt);
  const AlgoKey key{{int64_t(ctx.device), int64_t(g.dt), g.ta, g.tb, g.M, g.N, g.K, g.batch, g.lda, g.ldb, g.ldc,
                     g.stride_a, g.stride_b, g.stride_c, int64_t(epi), al_a, al_b, al_c,
                     g.bias ? int64_t(alignment_of(g.bias)) : 0, 0}};
  AlgoEntry entry;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = algo_cache().find(key);
    if (it != algo_cache().end()) {
      entry = it->second;
      cached = true;
    }
  }
  if (!cached) {
    LtPref pref;
    const uint64_t ws = ctx.lt_workspace_bytes;
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h));
    STRATA_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                             &al_a, sizeof(al_a)));
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                             &al_b, sizeof(al_b)));
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                             &al_c, sizeof(al_c)));
    STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                             &al_c, sizeof(al_c)));
    cublasLtMatmulHeuristicResult_t res{};
    int returned = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt, desc.h, la.h, lb.h, lc.h, lc.h, pref.h, 1, &res, &returned);
    // NOT_SUPPORTED / INVALID_VALUE here mean "no algorithm for this problem".
    entry.found = st == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS &&
                  res.workspaceSize <= ctx.lt_workspace_bytes;
    if (entry.found) entry.algo = res.algo;
    std::lock_guard<std::mutex> lock(g_cache_mu);
    algo_cache().emplace(key, entry);
  }
  if (!entry.found) return false;
  const float alpha = float(g.alpha), beta = float(g.beta);
  // D = C in place; with beta == 0 cuBLASLt does not read C.
  STRATA_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt, desc.h, &alpha, g.b, la.h, g.a, lb.h, &beta, g.c, lc.h, g.c,
                                     lc.h, &entry.algo, ctx.lt_workspace, ctx.lt_workspace_bytes, ctx.compute));
  return true;
}

// Classic cuBLAS (no epilogue): Dgemm for f64, GemmEx with fp32 compute otherwise.
void run_classic(const Gemm& g) {
  sc::Context& ctx = sc::context();
  cublasHandle_t h = ctx.cublas;  // bound to the compute stream in context.cu
  const cublasOperation_t op_a = op_of(g.tb), op_b = op_of(g.ta);
  const int m = int(g.N), n = int(g.M), k = int(g.K);
  const int lda = int(g.ldb), ldb = int(g.lda), ldc = int(g.ldc);
  if (g.dt == DType::F64) {
    const double alpha = g.alpha, beta = g.beta;
    const double* A = static_cast<const double*>(g.b);
    const double* B = static_cast<const double*>(g.a);
    double* C = static_cast<double*>(g.c);
    if (g.batch == 1)
      STRATA_CUBLAS_CHECK(cublasDgemm(h, op_a, op_b, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
    else
      STRATA_CUBLAS_CHECK(cublasDgemmStridedBatched(h, op_a, op_b, m, n, k, &alpha, A, lda, g.stride_b, B, ldb,
                                                    g.stride_a, &beta, C, ldc, g.stride_c, int(g.batch)));
    return;
  }
  const float alpha = float(g.alpha), beta = float(g.beta);
  const cudaDataType_t t = cuda_dtype(g.dt);
  if (g.batch == 1)
    STRATA_CUBLAS_CHECK(cublasGemmEx(h, op_a, op_b, m, n, k, &alpha, g.b, t, lda, g.a, t, ldb, &beta, g.c, t, ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  else
    STRATA_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op_a, op_b, m, n, k, &alpha, g.b, t, lda, g.stride_b, g.a, t,
                                                   ldb, g.stride_a, &beta, g.c, t, ldc, g.stride_c, int(g.batch),
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// cuBLASLt takes batches whose matrices do not overlap; interleaved (attention
// heads permuted to the front) or broadcast (stride 0) batches go to classic
// cuBLAS, whose strided-batched call is plain pointer arithmetic per matrix.
bool lt_batch_ok(const Gemm& g) {
  if (g.batch == 1) return true;
  const int64_t ext_b = g.tb ? extent(g.K, g.N, g.ldb) : extent(g.N, g.K, g.ldb);
  const int64_t ext_a = g.ta ? extent(g.M, g.K, g.lda) : extent(g.K, g.M, g.lda);
  return g.stride_a >= ext_a && g.stride_b >= ext_b && g.stride_c >= extent(g.N, g.M, g.ldc);
}

void run(const Gemm& g) {
  if (g.dt != DType::F64 && lt_batch_ok(g) && run_lt(g)) return;
  run_classic(g);
}

// out rows at c (leading dimension ldc) = alpha * op(a) @ op(b) + beta * out; M, N, K > 0.
void gemm_rows(DType dt, void* c, int64_t ldc, const Tensor& a, const Tensor& b, bool ta, bool tb, Dims d,
               double alpha, double beta) {
  Operand oa = prepare(a, ta), ob = prepare(b, tb);
  run(make_gemm(dt, d, oa, ob, c, ldc, alpha, beta));
}

void zero_fill(const Tensor& t) {
  if (t.numel() == 0) return;
  STRATA_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), sc::compute_stream()));
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const Dims d = check_operands("matmul", a, b, trans_a, trans_b, 2);
  Tensor out = Tensor::empty({d.M, d.N}, a.dtype(), a.device());
  if (d.M == 0 || d.N == 0) return out;
  if (d.K == 0) {  // an empty sum
    zero_fill(out);
    return out;
  }
  gemm_rows(a.dtype(), out.raw_data(), d.N, a, b, trans_a, trans_b, d, 1.0, 0.0);
  return out;
}

void gemm_into(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha,
               double beta) {
  const Dims d = check_operands("gemm_into", a, b, trans_a, trans_b, 2);
  STRATA_CHECK(out.defined() && out.device() == a.device() && out.dtype() == a.dtype())
      << "gemm_into: out " << (out.defined() ? out.str() : std::string("(undefined)")) << " must be a tensor on "
      << a.device().str() << " of dtype " << dtype_name(a.dtype());
  STRATA_CHECK(out.dim() == 2 && out.shape()[0] == d.M && out.shape()[1] == d.N)
      << "gemm_into: out has shape " << shape_str(out.shape()) << ", expected [" << d.M << ", " << d.N
      << "] for " << operand_str(a, trans_a) << " @ " << operand_str(b, trans_b);
  if (d.M == 0 || d.N == 0) return;
  if (d.K == 0) {  // alpha * (empty sum) + beta * out
    scale_into(out, beta);
    return;
  }
  int64_t ldc = 0;
  bool col_major = false;
  const bool aliased = out.impl().storage == a.impl().storage || out.impl().storage == b.impl().storage;
  if (!aliased && blas_layout(d.M, d.N, out.strides()[0], out.strides()[1], ldc, col_major)) {
    if (!col_major)
      gemm_rows(a.dtype(), out.raw_data(), ldc, a, b, trans_a, trans_b, d, alpha, beta);
    else  // out^T[N,M] is row-major: out^T = op(b)^T @ op(a)^T
      gemm_rows(a.dtype(), out.raw_data(), ldc, b, a, !trans_b, !trans_a, Dims{d.N, d.M, d.K}, alpha, beta);
    return;
  }
  // cuBLAS needs a destination with a unit stride that overlaps no operand:
  // work on a contiguous copy and write it back.
  Tensor tmp = Tensor::empty({d.M, d.N}, out.dtype(), out.device());
  if (beta != 0) copy_into(tmp, out);
  gemm_rows(a.dtype(), tmp.raw_data(), d.N, a, b, trans_a, trans_b, d, alpha, beta);
  copy_into(out, tmp);
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const Dims d = check_operands("bmm", a, b, trans_a, trans_b, 3);
  const int64_t batch = a.shape()[0];
  Tensor out = Tensor::empty({batch, d.M, d.N}, a.dtype(), a.device());
  if (batch == 0 || d.M == 0 || d.N == 0) return out;
  if (d.K == 0) {
    zero_fill(out);
    return out;
  }
  Operand oa = prepare(a, trans_a), ob = prepare(b, trans_b);
  Gemm g = make_gemm(a.dtype(), d, oa, ob, out.raw_data(), d.N, 1.0, 0.0);
  g.batch = batch;
  g.stride_c = batch > 1 ? d.M * d.N : 0;
  run(g);
  return out;
}

Tensor linear_forward(const Tensor& x2d, const Tensor& weight, const Tensor& bias, bool relu) {
  STRATA_CHECK(x2d.defined() && weight.defined()) << "linear_forward: undefined input or weight";
  STRATA_CHECK(x2d.dim() == 2 && weight.dim() == 2 && x2d.shape()[1] == weight.shape()[1])
      << "linear_forward: expected x [rows, in] and weight [out, in], got x " << shape_str(x2d.shape())
      << ", weight " << shape_str(weight.shape());
  const int64_t rows = x2d.shape()[0], in = x2d.shape()[1], out_f = weight.shape()[0];
  const bool same_device = x2d.device() == weight.device() && (!bias.defined() || bias.device() == x2d.device());
  STRATA_CHECK(x2d.device().is_cuda() && same_device)
      << "linear_forward: x " << x2d.str() << ", weight " << weight.str()
      << (bias.defined() ? ", bias " + bias.str() : std::string()) << " must be on one GPU";
  STRATA_CHECK(x2d.dtype() == weight.dtype() && (!bias.defined() || bias.dtype() == x2d.dtype()))
      << "linear_forward: dtypes differ: x " << x2d.str() << ", weight " << weight.str();
  STRATA_CHECK(gpu_float(x2d.dtype())) << "linear_forward: expected f32, f64, f16 or bf16, got "
                                       << dtype_name(x2d.dtype());
  STRATA_CHECK(!bias.defined() || (bias.dim() == 1 && bias.shape()[0] == out_f))
      << "linear_forward: bias " << shape_str(bias.shape()) << " does not match weight "
      << shape_str(weight.shape()) << " (expected [" << out_f << "])";
  STRATA_CHECK(rows <= INT_MAX && in <= INT_MAX && out_f <= INT_MAX)
      << "linear_forward: x " << shape_str(x2d.shape()) << " @ weight " << shape_str(weight.shape())
      << "^T exceeds the 32-bit cuBLAS interface";
  const DType dt = x2d.dtype();
  Tensor y = Tensor::empty({rows, out_f}, dt, x2d.device());
  if (rows == 0 || out_f == 0) return y;
  const Dims d{rows, out_f, in};

  // Fused: one cuBLASLt call with the epilogue. cuBLASLt's bias epilogue wants
  // a packed, 16-byte aligned vector, and (as PyTorch found) misbehaves on
  // degenerate shapes, so those, f64 and the no-algorithm case run unfused.
  // Its ReLU is max(v, 0), which differs from relu() only on NaN.
  constexpr int64_t kMaxFusedDim = 65535 * 32;
  const bool fusable = dt != DType::F64 && rows > 1 && in > 1 && out_f > 1 && rows < kMaxFusedDim &&
                       in < kMaxFusedDim && out_f < kMaxFusedDim;
  if (fusable && (bias.defined() || relu)) {
    Tensor bvec = bias;
    if (bias.defined() && (bias.strides()[0] != 1 || alignment_of(bias.raw_data()) < 16))
      bvec = contiguous_copy(bias);
    Operand ox = prepare(x2d, false), ow = prepare(weight, true);
    Gemm g = make_gemm(dt, d, ox, ow, y.raw_data(), out_f, 1.0, 0.0);
    g.bias = bvec.defined() ? bvec.raw_data() : nullptr;
    g.relu = relu;
    if (run_lt(g)) return y;
  }

  // Unfused: y = bias rows (or zeros), y += x @ w^T, then relu in place.
  const int64_t total = rows * out_f;
  if (bias.defined()) {
    dispatch_floating(dt, "linear_forward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      fill_rows_kernel<T><<<sc::blocks_for(total), sc::kThreads, 0, sc::compute_stream()>>>(
          y.data<T>(), static_cast<const T*>(bias.raw_data()), bias.strides()[0], out_f, total);
    });
    STRATA_KERNEL_CHECK();
  } else if (in == 0) {
    zero_fill(y);
  }
  if (in > 0) gemm_rows(dt, y.raw_data(), out_f, x2d, weight, false, true, d, 1.0, bias.defined() ? 1.0 : 0.0);
  if (relu) {
    dispatch_floating(dt, "linear_forward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      relu_kernel<T><<<sc::blocks_for(total), sc::kThreads, 0, sc::compute_stream()>>>(y.data<T>(), total);
    });
    STRATA_KERNEL_CHECK();
  }
  return y;
}

double measure_gemm_tflops(DType dt, int64_t m, int64_t n, int64_t k, int iters) {
  STRATA_CHECK(m > 0 && n > 0 && k > 0 && iters > 0)
      << "measure_gemm_tflops: expected positive sizes and iterations, got " << m << "x" << n << "x" << k << ", "
      << iters << " iterations";
  STRATA_CHECK(gpu_float(dt)) << "measure_gemm_tflops: expected f32, f64, f16 or bf16, got " << dtype_name(dt);
  const Device dev = Device::cuda(sc::context().device);
  Tensor a = Tensor::empty({m, k}, dt, dev), b = Tensor::empty({k, n}, dt, dev), c = Tensor::empty({m, n}, dt, dev);
  uint32_t seed = 1;
  for (const Tensor* t : {&a, &b}) {
    const int64_t total = t->numel();
    dispatch_floating(dt, "measure_gemm_tflops", [&](auto tag) {
      using T = typename decltype(tag)::type;
      bench_fill_kernel<T><<<sc::blocks_for(total), sc::kThreads, 0, sc::compute_stream()>>>(t->data<T>(), total,
                                                                                             seed++);
    });
    STRATA_KERNEL_CHECK();
  }
  // Into a preallocated output (the GEMM matmul() runs, without its
  // allocation), so the timing is the cuBLAS kernels alone. The warm-up also
  // fills the heuristic cache.
  for (int i = 0; i < 3; ++i) gemm_into(c, a, b, false, false, 1.0, 0.0);
  cudaEvent_t start = nullptr, stop = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreate(&start));
  STRATA_CUDA_CHECK(cudaEventCreate(&stop));
  float ms = 0;
  try {
    STRATA_CUDA_CHECK(cudaEventRecord(start, sc::compute_stream()));
    for (int i = 0; i < iters; ++i) gemm_into(c, a, b, false, false, 1.0, 0.0);
    STRATA_CUDA_CHECK(cudaEventRecord(stop, sc::compute_stream()));
    STRATA_CUDA_CHECK(cudaEventSynchronize(stop));
    STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  STRATA_CHECK(ms > 0) << "measure_gemm_tflops: timed " << iters << " products in " << ms << " ms";
  return 2.0 * double(m) * double(n) * double(k) * double(iters) / (double(ms) * 1e-3) / 1e12;
}

}  // namespace strata::backend::cuda
