// cuDNN fused flash attention through the cuDNN backend (graph) API
// (contract: strata/backend/cuda/cudnn_attention.h).
//
// There is no cudnn_frontend here, so this file builds by hand the operation
// graphs that cuDNN's runtime-fusion flash-attention engines match, in the
// form cudnn_frontend's composite SDPA nodes lower to for cuDNN 9 runtimes
// (before the single-op SDPA descriptors of 9.13+, which older runtimes lack):
//
// forward (f32 compute; virtual tensors are never stored):
//   S = Q @ K^T                 matmul, K^T = K with its last two dims' strides swapped
//   S = S * scale               pointwise MUL, scale passed by value
//   S = S + bias                pointwise ADD, bias [B,1,*,Tk]: 0, or very negative on padded keys
//   S = causal mask(S)          GEN_INDEX rows/cols, (rows + Tk - Tq), CMP_GE, BINARY_SELECT
//   M = max(S), E = exp(S - M), Z = sum(E)           reductions over keys
//   Stats = M + log(Z)          the per-row log-sum-exp, a real f32 [B,H,Tq,1] output
//   P = E / Z                   in the io dtype (the engines take bmm2's A operand so)
//   O = P @ V
// backward (the frontend's bprop lowering):
//   softmax_sum = sum(dO * O) * 1        a real f32 workspace tensor
//   S = mask(Q @ K^T * scale + bias) - Stats, P = exp(S)
//   dV = P^T @ dO                                (P^T: a reshape to io dtype)
//   dS = P * (dO @ V^T - softmax_sum) * scale
//   dK = dS^T @ Q,  dQ = identity(dS @ K)        dS @ K accumulates into a real f32 dQ_accum
// plus the frontend's workarounds for older runtimes: on cuDNN <= 9.15 the
// backward of a Tk that is not a multiple of 128 carries a padding mask with
// full sequence lengths (and, on 9.0..9.9, reapplies it after subtracting
// the statistics); masks select lowest() below cuDNN 9.10 and -inf from it.
//
// Strata's own semantics on top: key padding becomes the bias (made on the
// GPU by a small kernel that also finds each batch's first visible key);
// rows that see no key get zero output and -inf lse after the forward, and
// zero dO (with finite statistics) before the backward, so cuDNN's
// contributions of those rows are exactly zero, as the fused kernel's are.
//
// Finalized plans are cached (LRU, kCudnnPlanCacheSize) under everything that
// defines their graph; a graph cuDNN turns down is remembered and not retried.
#include "strata/backend/cuda/cudnn_attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::cudnn_attention_impl {

using backend::cuda::AttentionMask;
using backend::cuda::AttentionPolicy;
using backend::cuda::CudnnAttentionCounters;
using backend::cuda::FusedAttentionForward;
using backend::cuda::FusedAttentionGrads;

namespace {

// ------------------------------------------------------------ policy and eligibility

AttentionPolicy parse_policy() {
  const char* v = std::getenv("STRATA_ATTENTION");
  if (v == nullptr || *v == '\0') return AttentionPolicy::Auto;
  const std::string s(v);
  if (s == "auto") return AttentionPolicy::Auto;
  if (s == "cudnn") return AttentionPolicy::Cudnn;
  if (s == "strata") return AttentionPolicy::Strata;
  STRATA_FAIL() << "STRATA_ATTENTION: expected auto, cudnn or strata, got '" << s << "'";
  return AttentionPolicy::Auto;
}

int64_t runtime_version() {
  static const int64_t v = int64_t(cudnnGetVersion());
  return v;
}

std::string version_str(int64_t v) {
  std::ostringstream o;
  o << v / 10000 << "." << (v / 100) % 100 << "." << v % 100;
  return o.str();
}

enum class Causal : int { None = 0, TopLeft = 1, BottomRight = 2, Other = 3 };

// The causal masks cuDNN's engines take: the diagonal through (0, 0) with
// Tq == Tk, or through (Tq-1, Tk-1) with Tq <= Tk. An offset of Tk - 1 or more
// hides no key of any query, so it is no mask at all.
Causal causal_kind(const AttentionMask& m, int64_t Tq, int64_t Tk) {
  if (!m.causal || m.causal_offset >= Tk - 1) return Causal::None;
  if (m.causal_offset == 0 && Tq == Tk) return Causal::TopLeft;
  if (Tq <= Tk && m.causal_offset == Tk - Tq) return Causal::BottomRight;
  return Causal::Other;
}

std::string refusal(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, double dropout_p) {
  std::ostringstream why;
  if (!q.defined() || !k.defined() || !v.defined()) return "undefined q, k or v";
  if (!q.device().is_cuda() || k.device() != q.device() || v.device() != q.device())
    return "q, k, v are not all on one CUDA device";
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || k.size(0) != q.size(0) || k.size(1) != q.size(1) ||
      k.size(3) != q.size(3) || v.shape() != k.shape()) {
    why << "q " << q.str() << ", k " << k.str() << ", v " << v.str() << " are not [B, H, T, D] alike";
    return why.str();
  }
  const DType dt = q.dtype();
  if ((dt != DType::BF16 && dt != DType::F16) || k.dtype() != dt || v.dtype() != dt) {
    why << "inputs are " << dtype_name(dt) << " (cuDNN attention takes bf16 or f16)";
    return why.str();
  }
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  if (D == 0 || D % 8 != 0 || D > 128) {
    why << "head dim " << D << " (cuDNN attention needs a multiple of 8, at most 128)";
    return why.str();
  }
  if (B * H * Tq * Tk == 0) return "empty inputs";
  if (Tq == 1 && Tk == 1) return "Tq = Tk = 1 (cuDNN's attention backward does not take it)";
  if (dropout_p > 0.0) return "dropout is on (cuDNN's RNG cannot reproduce Strata's Philox dropout draws)";
  if (mask.key_padding.defined()) {
    const Tensor& p = mask.key_padding;
    if (p.dim() != 2 || p.size(0) != B || p.size(1) != Tk || p.device() != q.device()) {
      why << "key padding " << p.str() << " is not [" << B << ", " << Tk << "] on " << q.device().str();
      return why.str();
    }
  }
  const Causal c = causal_kind(mask, Tq, Tk);
  if (c == Causal::Other) {
    why << "causal offset " << mask.causal_offset << " with Tq " << Tq << ", Tk " << Tk
        << " (cuDNN takes offset 0 with Tq == Tk, or Tk - Tq)";
    return why.str();
  }
  const Context& ctx = context();
  if (ctx.cc_major < 8) {
    why << "compute capability " << ctx.cc_major << "." << ctx.cc_minor << " (cuDNN flash attention needs 8.0+)";
    return why.str();
  }
  const int64_t ver = runtime_version();
  if (ver < 90000) {
    why << "cuDNN runtime " << version_str(ver) << " (needs 9.0 or newer)";
    return why.str();
  }
  if (ver == 91000 || ver == 91001) {
    why << "cuDNN runtime " << version_str(ver) << " (its attention has known bugs; 9.10.2 or newer works)";
    return why.str();
  }
  if (c == Causal::BottomRight && mask.key_padding.defined())
    return "bottom-right causal mask with key padding (cuDNN takes no bias with a bottom-right mask)";
  if (c == Causal::BottomRight && ver < 90600 && (Tq % 64 != 0 || Tk % 64 != 0)) {
    why << "bottom-right causal mask with Tq " << Tq << ", Tk " << Tk << " on cuDNN " << version_str(ver)
        << " (needs multiples of 64 below 9.6)";
    return why.str();
  }
  return "";
}

// ------------------------------------------------------------ mask kernels

// Key padding element (b, j) of any dtype; nonzero (NaN included) = hidden.
struct PadView {
  const char* p = nullptr;
  DType dt = DType::F32;
  int64_t sb = 0, sj = 0;
};

__device__ __forceinline__ bool pad_hidden(const PadView& pv, int64_t b, int64_t j) {
  const int64_t o = b * pv.sb + j * pv.sj;
  switch (pv.dt) {
    case DType::F32: return reinterpret_cast<const float*>(pv.p)[o] != 0.f;
    case DType::F64: return reinterpret_cast<const double*>(pv.p)[o] != 0.0;
    case DType::F16: return float(reinterpret_cast<const Half*>(pv.p)[o]) != 0.f;
    case DType::BF16: return float(reinterpret_cast<const BFloat16*>(pv.p)[o]) != 0.f;
    case DType::I32: return reinterpret_cast<const int32_t*>(pv.p)[o] != 0;
    case DType::I64: return reinterpret_cast<const int64_t*>(pv.p)[o] != 0;
  }
  return false;
}

// One block per batch: bias[b][j] = 0 for a visible key, `hidden` for a padded
// one (and for the row padding j in [Tk, ld)); first_key[b] = the smallest
// visible j, or Tk when every key of b is padded.
template <class T>
__global__ void mask_bias_kernel(PadView pad, int64_t Tk, int64_t ld, float hidden, T* __restrict__ bias,
                                 int* __restrict__ first_key) {
  const int64_t b = blockIdx.x;
  int first = int(Tk);
  for (int64_t j = threadIdx.x; j < ld; j += blockDim.x) {
    const bool hid = j >= Tk || pad_hidden(pad, b, j);
    bias[b * ld + j] = store_cast<T>(hid ? hidden : 0.f);
    if (!hid && int(j) < first) first = int(j);
  }
  first = block_reduce(first, ReduceMin{});
  if (threadIdx.x == 0) first_key[b] = first;
}

// Query i of batch b sees a key iff b's first visible key is not causally hidden from it.
__device__ __forceinline__ bool row_sees_a_key(int first, int64_t Tk, int64_t i, bool causal, int64_t offset) {
  return first < Tk && (!causal || int64_t(first) <= i + offset);
}

// After the forward: rows that see no key get zero output and lse -inf.
template <class T>
__global__ void finish_forward_kernel(T* __restrict__ out, float* __restrict__ lse, const int* __restrict__ first_key,
                                      int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, int64_t offset,
                                      int64_t n) {
  STRATA_GRID_LOOP(e, n) {
    const int64_t row = e / D, i = row % Tq, b = row / (H * Tq);
    if (row_sees_a_key(first_key[b], Tk, i, causal, offset)) continue;
    out[e] = store_cast<T>(0.f);
    if (e % D == 0) lse[row] = -std::numeric_limits<float>::infinity();
  }
}

template <class T>
struct Strided4 {
  const T* p;
  int64_t s0, s1, s2, s3;
};

// Before the backward: a contiguous dO with the rows that see no key zeroed,
// and statistics with those rows' -inf replaced by 0 (any finite value: their
// scores are all hugely negative, so the probabilities cuDNN recomputes are
// exactly 0, and with dO = 0 every contribution of the row vanishes; -inf
// would make exp(s - lse) infinite and 0 * inf = NaN).
template <class T>
__global__ void prepare_backward_kernel(Strided4<T> g, T* __restrict__ dout, const float* __restrict__ lse,
                                        float* __restrict__ stats, const int* __restrict__ first_key, int64_t H,
                                        int64_t Tq, int64_t Tk, int64_t D, bool causal, int64_t offset, int64_t n) {
  STRATA_GRID_LOOP(e, n) {
    const int64_t d = e % D, row = e / D, i = row % Tq, bh = row / Tq, h = bh % H, b = bh / H;
    const bool seen = row_sees_a_key(first_key[b], Tk, i, causal, offset);
    dout[e] = seen ? g.p[b * g.s0 + h * g.s1 + i * g.s2 + d * g.s3] : store_cast<T>(0.f);
    if (d == 0) stats[row] = seen ? lse[row] : 0.f;
  }
}

__global__ void fill_i32_kernel(int32_t* __restrict__ p, int32_t value, int64_t n) {
  STRATA_GRID_LOOP(e, n) p[e] = value;
}

// The bias added to a padded key's score: far below any real score difference
// (exp underflows to exactly 0), finite in the bias dtype, and small enough that
// cuDNN's exp2 rescaling (x * log2 e) cannot overflow it to -inf, which would
// turn a row of only padded keys into NaN.
float hidden_bias(DType dt) { return dt == DType::F16 ? -30000.f : -1e9f; }

// Row stride of the bias in elements: 16 bytes, the alignment cuDNN is promised.
int64_t bias_ld(int64_t Tk) { return (Tk + 7) / 8 * 8; }

struct MaskTensors {
  Tensor bias;       // [B, ld] in the io dtype
  Tensor first_key;  // [B] i32
};

MaskTensors make_mask_tensors(const Tensor& pad, DType dt, int64_t B, int64_t Tk) {
  MaskTensors m;
  const int64_t ld = bias_ld(Tk);
  m.bias = Tensor::empty({B, ld}, dt, pad.device());
  m.first_key = Tensor::empty({B}, DType::I32, pad.device());
  PadView pv;
  pv.p = static_cast<const char*>(pad.raw_data());
  pv.dt = pad.dtype();
  pv.sb = pad.strides()[0];
  pv.sj = pad.strides()[1];
  auto launch = [&](auto tag) {
    using T = typename decltype(tag)::type;
    mask_bias_kernel<T><<<unsigned(B), kThreads, 0, compute_stream()>>>(
        pv, Tk, ld, hidden_bias(dt), static_cast<T*>(m.bias.raw_data()), static_cast<int*>(m.first_key.raw_data()));
    STRATA_KERNEL_CHECK();
  };
  if (dt == DType::BF16) launch(TypeTag<BFloat16>{});
  else launch(TypeTag<Half>{});
  return m;
}

// ------------------------------------------------------------ backend descriptors

enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kBias, kScale, kNeg, kSkv, kSq,
  kDO, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum, kSeqQ, kSeqKV, kOne,
  kFirstVirtual = 1000
};

using Dims = std::array<int64_t, 4>;

Dims packed(const Dims& d) { return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1}; }

// A graph build step cuDNN turned down; caught at the top of build_plan.
struct BuildError {
  std::string what;
};

void must(cudnnStatus_t s, const char* step) {
  if (s != CUDNN_STATUS_SUCCESS) throw BuildError{std::string(step) + ": " + cudnnGetErrorString(s)};
}

// Owns backend descriptors; destroys them in reverse order of creation. The
// statuses are ignored: at exit the CUDA context may already be unusable, and
// a descriptor that cannot be destroyed then is leaked, not an error.
class Descs {
 public:
  Descs() = default;
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
  ~Descs() {
    for (auto it = list_.rbegin(); it != list_.rend(); ++it) (void)cudnnBackendDestroyDescriptor(*it);
  }
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type, const char* what) {
    cudnnBackendDescriptor_t d = nullptr;
    must(cudnnBackendCreateDescriptor(type, &d), what);
    list_.push_back(d);
    return d;
  }
  // Takes ownership of a descriptor created elsewhere.
  void adopt(cudnnBackendDescriptor_t d) { list_.push_back(d); }

 private:
  std::vector<cudnnBackendDescriptor_t> list_;
};

void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
              int64_t count, const void* values, const char* step) {
  must(cudnnBackendSetAttribute(d, name, type, count, values), step);
}

void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value,
              const char* step) {
  set_attr(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, step);
}

// The handle attributes of the operation graph and the execution plan are
// required by cuDNN 9.0 and deprecated by later releases (which take the
// device from elsewhere): set them, and do not fail where a runtime refuses.
void set_handle(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name) {
  cudnnHandle_t h = cudnn();
  (void)cudnnBackendSetAttribute(d, name, CUDNN_TYPE_HANDLE, 1, &h);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
constexpr cudnnBackendAttributeName_t kGraphHandleAttr = CUDNN_ATTR_OPERATIONGRAPH_HANDLE;
constexpr cudnnBackendAttributeName_t kPlanHandleAttr = CUDNN_ATTR_EXECUTION_PLAN_HANDLE;
#pragma GCC diagnostic pop

// A tensor of the graph: its descriptor and, for the variant pack, whether it is real.
struct T4 {
  cudnnBackendDescriptor_t desc = nullptr;
  Dims dims{};
  Dims strides{};
};

// Builds one operation graph: tensors (every real one listed for the variant
// pack, in creation order), then operations in topological order.
class GraphBuilder {
 public:
  GraphBuilder(Descs& descs, cudnnDataType_t io) : d_(descs), io_(io) {}

  cudnnDataType_t io() const { return io_; }

  T4 real(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides) {
    real_uids_.push_back(uid);
    return tensor(uid, dt, dims, strides, false, false);
  }
  T4 by_value(int64_t uid, cudnnDataType_t dt) {
    real_uids_.push_back(uid);
    return tensor(uid, dt, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }
  T4 virt(cudnnDataType_t dt, const Dims& dims) { return virt(dt, dims, packed(dims)); }
  T4 virt(cudnnDataType_t dt, const Dims& dims, const Dims& strides) {
    return tensor(next_virtual_++, dt, dims, strides, true, false);
  }

  // y = op(x[, b[, t]]) with the given math precision; axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, const T4& x, const T4* b, const T4* t,
                 const T4& y, int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = d_.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise descriptor");
    set_attr(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set_attr(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &compute, "pointwise math precision");
    if (axis >= 0) set_attr(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    must(cudnnBackendFinalize(pw), "pointwise descriptor finalize");
    cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise operation");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "pointwise op descriptor");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc, "pointwise x");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc, "pointwise y");
    const float one = 1.f;
    set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha1");
    set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha2");
    if (b != nullptr) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc, "pointwise b");
    if (t != nullptr) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t->desc, "pointwise t");
    must(cudnnBackendFinalize(op), "pointwise operation finalize");
    ops_.push_back(op);
  }
  void unary(cudnnPointwiseMode_t mode, const T4& x, const T4& y) {
    pointwise(mode, CUDNN_DATA_FLOAT, x, nullptr, nullptr, y);
  }
  void binary(cudnnPointwiseMode_t mode, const T4& x, const T4& b, const T4& y,
              cudnnDataType_t compute = CUDNN_DATA_FLOAT) {
    pointwise(mode, compute, x, &b, nullptr, y);
  }

  // c = a @ b over the last two dims, f32 accumulation; the overrides (optional)
  // are [B,1,1,1] i32 tensors of actual sequence lengths.
  void matmul(const T4& a, const T4& b, const T4& c, const T4* m_override = nullptr,
              const T4* n_override = nullptr, const T4* k_override = nullptr) {
    cudnnBackendDescriptor_t mm = d_.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul descriptor");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set_attr(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "matmul compute type");
    must(cudnnBackendFinalize(mm), "matmul descriptor finalize");
    cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a.desc, "matmul a");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b.desc, "matmul b");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c.desc, "matmul c");
    if (m_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override->desc, "matmul m");
    if (n_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override->desc, "matmul n");
    if (k_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override->desc, "matmul k");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm, "matmul op descriptor");
    must(cudnnBackendFinalize(op), "matmul operation finalize");
    ops_.push_back(op);
  }

  // y = reduce(x) over the dims where y has size 1 (here: the last).
  void reduction(cudnnReduceTensorOp_t mode, const T4& x, const T4& y) {
    cudnnBackendDescriptor_t rd = d_.make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction descriptor");
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set_attr(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, "reduction operator");
    set_attr(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction compute type");
    must(cudnnBackendFinalize(rd), "reduction descriptor finalize");
    cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x.desc, "reduction x");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y.desc, "reduction y");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd, "reduction op descriptor");
    must(cudnnBackendFinalize(op), "reduction operation finalize");
    ops_.push_back(op);
  }

  // y = x seen with y's dims and strides (a transpose of the last two dims here).
  void reshape(const T4& x, const T4& y) {
    cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape operation");
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x.desc, "reshape x");
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y.desc, "reshape y");
    must(cudnnBackendFinalize(op), "reshape operation finalize");
    ops_.push_back(op);
  }

  // The finalized operation graph of every operation added.
  cudnnBackendDescriptor_t finish() {
    cudnnBackendDescriptor_t g = d_.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    set_attr(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops_.size()), ops_.data(),
             "operation graph ops");
    set_handle(g, kGraphHandleAttr);
    must(cudnnBackendFinalize(g), "operation graph finalize");
    return g;
  }

  const std::vector<int64_t>& real_uids() const { return real_uids_; }

 private:
  T4 tensor(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides, bool is_virtual,
            bool by_value) {
    cudnnBackendDescriptor_t t = d_.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor descriptor");
    const int64_t alignment = 16;
    set_attr(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor data type");
    set_attr(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
    set_attr(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
    set_attr(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    set_attr(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
    set_attr(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual flag");
    if (by_value) set_attr(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by-value flag");
    must(cudnnBackendFinalize(t), "tensor descriptor finalize");
    return T4{t, dims, strides};
  }

  Descs& d_;
  cudnnDataType_t io_;
  int64_t next_virtual_ = kFirstVirtual;
  std::vector<cudnnBackendDescriptor_t> ops_;
  std::vector<int64_t> real_uids_;
};

// ------------------------------------------------------------ graphs

// The ways the bias (a [B, Tk] buffer, rows ld apart) is declared to cuDNN,
// tried in this order until one builds: as [B,1,Tq,Tk] with a zero query
// stride first, because that is what PyTorch passes (its cuDNN SDPA expands
// every attn_mask to [B, 1 or H, Tq, Tk] before building the graph), so it is
// the form the engines of every 9.x runtime have been exercised with; then as
// [B,H,Tq,Tk] with zero head and query strides (the full shape); last as
// [B,1,1,Tk], broadcast by the pointwise add, which no known caller uses (an
// engine that took it but read the query dim wrong would compute garbage, so
// it is only a last resort).
constexpr int kBiasLayouts = 3;
const char* bias_layout_name(int layout) {
  switch (layout) {
    case 0: return "[B,1,Tq,Tk] (query stride 0)";
    case 1: return "[B,H,Tq,Tk] (head, query strides 0)";
    default: return "[B,1,1,Tk]";
  }
}

// Everything that defines a graph: the plan cache key.
struct Spec {
  int device = 0;
  bool backward = false;
  DType dtype = DType::BF16;
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0;
  Dims sq{}, sk{}, sv{};  // strides of q, k, v as [B, H, T, D] (size-1 dims normalized)
  Causal causal = Causal::None;
  bool bias = false;
  int bias_layout = 0;  // how the [B, Tk] bias is declared: see bias_tensor
  uint32_t scale_bits = 0;
  bool padding_workaround = false;  // backward on cuDNN <= 9.15 with Tk % 128 != 0
  auto tie() const {
    return std::tie(device, backward, dtype, B, H, Tq, Tk, D, sq, sk, sv, causal, bias, bias_layout, scale_bits,
                    padding_workaround);
  }
  bool operator<(const Spec& o) const { return tie() < o.tie(); }
  float scale() const {
    float s;
    std::memcpy(&s, &scale_bits, sizeof s);
    return s;
  }
  std::string str() const {
    std::ostringstream o;
    o << (backward ? "backward" : "forward") << " " << dtype_name(dtype) << " B " << B << " H " << H << " Tq " << Tq
      << " Tk " << Tk << " D " << D
      << (causal == Causal::TopLeft ? " causal" : causal == Causal::BottomRight ? " causal bottom-right" : "")
      << (bias ? std::string(" bias ") + bias_layout_name(bias_layout) : std::string());
    return o.str();
  }
};

// The value a mask selects for hidden scores (what cudnn_frontend passes):
// lowest() below cuDNN 9.10, whose engines prefer it, -inf from 9.10 on.
float mask_value() {
  return runtime_version() < 91000 ? std::numeric_limits<float>::lowest()
                                   : -std::numeric_limits<float>::infinity();
}

// A finalized plan with everything it was built from and its by-value scalars.
struct Plan {
  Descs descs;  // destroyed with the plan, in reverse order (the plan last created, first destroyed)
  cudnnBackendDescriptor_t exec = nullptr;
  int64_t workspace = 0;
  std::vector<int64_t> uids;  // the graph's real tensors: the variant pack, in this order
  float scale = 1.f, neg = 0.f, one = 1.f;
  int32_t seq_q = 0, seq_kv = 0;  // by-value (bottom-right causal mask)
  const void* by_value(int64_t uid) const {
    switch (uid) {
      case kScale: return &scale;
      case kNeg: return &neg;
      case kOne: return &one;
      case kSq: return &seq_q;
      case kSkv: return &seq_kv;
      default: return nullptr;
    }
  }
};

cudnnDataType_t cudnn_dtype(DType dt) { return dt == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

// Strided views of the inputs as the graphs see them.
Dims kt_strides(const Dims& s) { return {s[0], s[1], s[3], s[2]}; }  // K^T: the last two dims swapped

T4 bias_tensor(GraphBuilder& g, const Spec& s) {
  const int64_t ld = bias_ld(s.Tk);
  switch (s.bias_layout) {
    case 0: return g.real(kBias, g.io(), {s.B, 1, s.Tq, s.Tk}, {ld, ld, 0, 1});
    case 1: return g.real(kBias, g.io(), {s.B, s.H, s.Tq, s.Tk}, {ld, 0, 0, 1});
    default: return g.real(kBias, g.io(), {s.B, 1, 1, s.Tk}, {ld, ld, ld, 1});
  }
}

// score with causally hidden entries replaced by the mask value: keep (row + Tk
// - Tq >= col) for bottom-right alignment, (row >= col) for top-left. Tk and Tq
// come from the graph's [B,1,1,1] sequence-length tensors where it has them
// (the backward's padding workaround), else by value: cudnn_frontend's
// bottom-right mask uses SEQ_LEN_Q/SEQ_LEN_KV whenever they are set.
T4 causal_mask(GraphBuilder& g, const Spec& s, const T4& score, const T4& neg, const T4* seq_q = nullptr,
               const T4* seq_kv = nullptr) {
  T4 row = g.virt(CUDNN_DATA_INT32, score.dims);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, score, nullptr, nullptr, row, 2);
  if (s.causal == Causal::BottomRight) {
    const T4 skv = seq_kv != nullptr ? *seq_kv : g.by_value(kSkv, CUDNN_DATA_INT32);
    const T4 sq = seq_q != nullptr ? *seq_q : g.by_value(kSq, CUDNN_DATA_INT32);
    const T4 plus = g.virt(CUDNN_DATA_INT32, score.dims), shifted = g.virt(CUDNN_DATA_INT32, score.dims);
    g.binary(CUDNN_POINTWISE_ADD, row, skv, plus, CUDNN_DATA_INT32);
    g.binary(CUDNN_POINTWISE_SUB, plus, sq, shifted, CUDNN_DATA_INT32);
    row = shifted;
  }
  const T4 col = g.virt(CUDNN_DATA_INT32, score.dims);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, score, nullptr, nullptr, col, 3);
  const T4 keep = g.virt(CUDNN_DATA_BOOLEAN, score.dims);
  g.binary(CUDNN_POINTWISE_CMP_GE, row, col, keep, CUDNN_DATA_BOOLEAN);
  const T4 out = g.virt(CUDNN_DATA_FLOAT, score.dims);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, score, &neg, &keep, out);
  return out;
}

// score outside (row < seq_q && col < seq_kv) replaced by the mask value (the
// backward workaround; the lengths are the full Tq and Tk).
T4 padding_mask(GraphBuilder& g, const T4& score, const T4& seq_q, const T4& seq_kv, const T4& neg) {
  const T4 row = g.virt(CUDNN_DATA_INT32, score.dims), col = g.virt(CUDNN_DATA_INT32, score.dims);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, score, nullptr, nullptr, row, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, score, nullptr, nullptr, col, 3);
  const T4 row_in = g.virt(CUDNN_DATA_BOOLEAN, score.dims), col_in = g.virt(CUDNN_DATA_BOOLEAN, score.dims);
  g.binary(CUDNN_POINTWISE_CMP_LT, row, seq_q, row_in, CUDNN_DATA_BOOLEAN);
  g.binary(CUDNN_POINTWISE_CMP_LT, col, seq_kv, col_in, CUDNN_DATA_BOOLEAN);
  const T4 keep = g.virt(CUDNN_DATA_BOOLEAN, score.dims);
  g.binary(CUDNN_POINTWISE_LOGICAL_AND, row_in, col_in, keep, CUDNN_DATA_BOOLEAN);
  const T4 out = g.virt(CUDNN_DATA_FLOAT, score.dims);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, score, &neg, &keep, out);
  return out;
}

void forward_graph(GraphBuilder& g, const Spec& s) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  const T4 q = g.real(kQ, g.io(), {B, H, Tq, D}, s.sq);
  const T4 kt = g.real(kK, g.io(), {B, H, D, Tk}, kt_strides(s.sk));
  const T4 v = g.real(kV, g.io(), {B, H, Tk, D}, s.sv);
  const T4 o = g.real(kO, g.io(), {B, H, Tq, D}, packed({B, H, Tq, D}));
  const T4 stats = g.real(kStats, CUDNN_DATA_FLOAT, {B, H, Tq, 1}, packed({B, H, Tq, 1}));
  const T4 scale = g.by_value(kScale, CUDNN_DATA_FLOAT);
  const Dims sdims{B, H, Tq, Tk}, rdims{B, H, Tq, 1};

  const T4 s0 = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.matmul(q, kt, s0);
  T4 score = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.binary(CUDNN_POINTWISE_MUL, s0, scale, score);
  if (s.bias) {
    const T4 bias = bias_tensor(g, s), biased = g.virt(CUDNN_DATA_FLOAT, sdims);
    g.binary(CUDNN_POINTWISE_ADD, score, bias, biased);
    score = biased;
  }
  if (s.causal != Causal::None) score = causal_mask(g, s, score, g.by_value(kNeg, CUDNN_DATA_FLOAT));

  // softmax with statistics: M = max, E = exp(S - M), Z = sum E, Stats = M + log Z, P = E / Z
  const T4 m = g.virt(CUDNN_DATA_FLOAT, rdims), shifted = g.virt(CUDNN_DATA_FLOAT, sdims);
  const T4 e = g.virt(CUDNN_DATA_FLOAT, sdims), z = g.virt(CUDNN_DATA_FLOAT, rdims);
  const T4 log_z = g.virt(CUDNN_DATA_FLOAT, rdims), p = g.virt(g.io(), sdims);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, score, m);
  g.binary(CUDNN_POINTWISE_SUB, score, m, shifted);
  g.unary(CUDNN_POINTWISE_EXP, shifted, e);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
  g.unary(CUDNN_POINTWISE_LOG, z, log_z);
  g.binary(CUDNN_POINTWISE_ADD, m, log_z, stats);
  g.binary(CUDNN_POINTWISE_DIV, e, z, p);
  g.matmul(p, v, o);
}

void backward_graph(GraphBuilder& g, const Spec& s) {
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  const int64_t ver = runtime_version();
  const T4 q = g.real(kQ, g.io(), {B, H, Tq, D}, s.sq);
  const T4 kt = g.real(kK, g.io(), {B, H, D, Tk}, kt_strides(s.sk));
  const T4 vt = g.real(kV, g.io(), {B, H, D, Tk}, kt_strides(s.sv));
  const T4 o = g.real(kO, g.io(), {B, H, Tq, D}, packed({B, H, Tq, D}));
  const T4 dout = g.real(kDO, g.io(), {B, H, Tq, D}, packed({B, H, Tq, D}));
  const T4 stats = g.real(kStats, CUDNN_DATA_FLOAT, {B, H, Tq, 1}, packed({B, H, Tq, 1}));
  const T4 dq = g.real(kDQ, g.io(), {B, H, Tq, D}, packed({B, H, Tq, D}));
  const T4 dk = g.real(kDK, g.io(), {B, H, Tk, D}, packed({B, H, Tk, D}));
  const T4 dv = g.real(kDV, g.io(), {B, H, Tk, D}, packed({B, H, Tk, D}));
  const T4 softmax_sum = g.real(kSoftmaxSum, CUDNN_DATA_FLOAT, {B, H, Tq, 1}, packed({B, H, Tq, 1}));
  const T4 dq_accum = g.real(kDQAccum, CUDNN_DATA_FLOAT, {B, H, Tq, D}, packed({B, H, Tq, D}));
  const T4 scale = g.by_value(kScale, CUDNN_DATA_FLOAT);
  const T4 one = g.by_value(kOne, CUDNN_DATA_FLOAT);
  const bool need_neg = s.causal != Causal::None || s.padding_workaround;
  const T4 neg = need_neg ? g.by_value(kNeg, CUDNN_DATA_FLOAT) : T4{};
  T4 seq_q, seq_kv;
  if (s.padding_workaround) {
    seq_q = g.real(kSeqQ, CUDNN_DATA_INT32, {B, 1, 1, 1}, {1, 1, 1, 1});
    seq_kv = g.real(kSeqKV, CUDNN_DATA_INT32, {B, 1, 1, 1}, {1, 1, 1, 1});
  }
  const T4* mq = s.padding_workaround ? &seq_q : nullptr;
  const T4* mkv = s.padding_workaround ? &seq_kv : nullptr;
  const Dims sdims{B, H, Tq, Tk}, rdims{B, H, Tq, 1}, tdims{B, H, Tk, Tq};
  const Dims tstrides{H * Tq * Tk, Tq * Tk, 1, Tk};  // a [Tq, Tk] tensor read as [Tk, Tq]

  // softmax_sum = sum over d of dO * O (times 1: the place of dropout's scale)
  const T4 do_o = g.virt(CUDNN_DATA_FLOAT, {B, H, Tq, D}), row_sum = g.virt(CUDNN_DATA_FLOAT, rdims);
  g.binary(CUDNN_POINTWISE_MUL, dout, o, do_o);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, row_sum);
  g.binary(CUDNN_POINTWISE_MUL, row_sum, one, softmax_sum);

  // P = exp(mask(Q K^T * scale + bias) - Stats)
  const T4 s0 = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.matmul(q, kt, s0, mq, mkv, nullptr);
  T4 score = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.binary(CUDNN_POINTWISE_MUL, s0, scale, score);
  if (s.bias) {
    const T4 bias = bias_tensor(g, s), biased = g.virt(CUDNN_DATA_FLOAT, sdims);
    g.binary(CUDNN_POINTWISE_ADD, score, bias, biased);
    score = biased;
  }
  if (s.padding_workaround) score = padding_mask(g, score, seq_q, seq_kv, neg);
  T4 centred = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.binary(CUDNN_POINTWISE_SUB, score, stats, centred);
  if (s.padding_workaround && ver < 91000) centred = padding_mask(g, centred, seq_q, seq_kv, neg);
  if (s.causal != Causal::None) centred = causal_mask(g, s, centred, neg, mq, mkv);
  const T4 p = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.unary(CUDNN_POINTWISE_EXP, centred, p);

  // dV = P^T dO
  const T4 pt = g.virt(g.io(), tdims, tstrides);
  g.reshape(p, pt);
  g.matmul(pt, dout, dv, mkv, nullptr, mq);

  // dS = P * (dO V^T - softmax_sum) * scale
  const T4 dp = g.virt(CUDNN_DATA_FLOAT, sdims), dp_c = g.virt(CUDNN_DATA_FLOAT, sdims);
  const T4 ds0 = g.virt(CUDNN_DATA_FLOAT, sdims), ds = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.matmul(dout, vt, dp, mq, mkv, nullptr);
  g.binary(CUDNN_POINTWISE_SUB, dp, softmax_sum, dp_c);
  g.binary(CUDNN_POINTWISE_MUL, dp_c, p, ds0);
  g.binary(CUDNN_POINTWISE_MUL, ds0, scale, ds);

  // dK = dS^T Q
  const T4 dst = g.virt(g.io(), tdims, tstrides);
  g.reshape(ds, dst);
  g.matmul(dst, q, dk, mkv, nullptr, mq);

  // dQ = dS K, accumulated in f32, then converted
  const T4 k_back = g.virt(CUDNN_DATA_FLOAT, {B, H, Tk, D}, s.sk);
  g.reshape(kt, k_back);
  g.matmul(ds, k_back, dq_accum, mq, nullptr, mkv);
  g.unary(CUDNN_POINTWISE_IDENTITY, dq_accum, dq);
}

// Heuristics (mode A, then the fallback list) for the graph; the first engine
// configuration that finalizes into a plan wins. *why collects each mode's
// last failure when none does.
cudnnBackendDescriptor_t plan_for(Descs& descs, cudnnBackendDescriptor_t graph, std::string* why) {
  constexpr int64_t kMaxConfigs = 16;  // enough to get past engines a shape rules out
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    std::string err = "no engine configuration";
    try {
      cudnnBackendDescriptor_t heur = descs.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics descriptor");
      set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
      set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
      must(cudnnBackendFinalize(heur), "heuristics finalize");
      // how many configurations there are, then that many (at most kMaxConfigs)
      int64_t count = 0;
      must(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                    nullptr),
           "heuristics result count");
      count = std::min(count, kMaxConfigs);
      std::vector<cudnnBackendDescriptor_t> cfgs;
      for (int64_t i = 0; i < count; ++i)
        cfgs.push_back(descs.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration"));
      int64_t got = 0;
      if (count > 0)
        must(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                      &got, cfgs.data()),
             "heuristics results");
      for (int64_t i = 0; i < std::min(got, count); ++i) {
        cudnnBackendDescriptor_t plan = nullptr;
        cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
        if (st != CUDNN_STATUS_SUCCESS) {
          err = std::string("execution plan descriptor: ") + cudnnGetErrorString(st);
          continue;
        }
        set_handle(plan, kPlanHandleAttr);
        cudnnBackendDescriptor_t cfg = cfgs[size_t(i)];
        st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      1, &cfg);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan);
        if (st == CUDNN_STATUS_SUCCESS) {
          descs.adopt(plan);  // destroyed with everything it was built from
          return plan;
        }
        err = std::string("execution plan finalize: ") + cudnnGetErrorString(st);
        (void)cudnnBackendDestroyDescriptor(plan);
      }
    } catch (const BuildError& e) {
      err = e.what;
    }
    if (!why->empty()) *why += "; ";
    *why += std::string(mode == CUDNN_HEUR_MODE_A ? "heuristics A: " : "fallback heuristics: ") + err;
  }
  return nullptr;
}

struct Built {
  std::shared_ptr<Plan> plan;
  std::string why;  // when !plan
};

Built build_plan(const Spec& s) {
  Built r;
  auto plan = std::make_shared<Plan>();
  try {
    GraphBuilder g(plan->descs, cudnn_dtype(s.dtype));
    if (s.backward) backward_graph(g, s);
    else forward_graph(g, s);
    cudnnBackendDescriptor_t graph = g.finish();
    std::string err;
    cudnnBackendDescriptor_t exec = plan_for(plan->descs, graph, &err);
    if (exec == nullptr) {
      r.why = err;
      return r;
    }
    plan->exec = exec;
    int64_t n = 0, ws = 0;
    must(cudnnBackendGetAttribute(exec, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
         "plan workspace size");
    plan->workspace = ws;
    plan->uids = g.real_uids();
  } catch (const BuildError& e) {
    r.why = e.what;
    return r;
  } catch (const Error& e) {  // cuda::cudnn() could not create the handle: cuDNN is unusable here
    r.why = e.what();
    return r;
  }
  plan->scale = s.scale();
  plan->neg = mask_value();
  plan->seq_q = int32_t(s.Tq);
  plan->seq_kv = int32_t(s.Tk);
  r.plan = std::move(plan);
  return r;
}

// ------------------------------------------------------------ plan cache

class PlanCache {
 public:
  // The cached plan of s, built on a miss; null (with *why) when cuDNN turns
  // the graph down, now or on an earlier call (a failed graph is not retried).
  std::shared_ptr<Plan> get(const Spec& s, std::string* why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto f = failed_.find(s); f != failed_.end()) {
      *why = f->second;
      return nullptr;
    }
    if (auto it = index_.find(s); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++n_.cache_hits;
      return it->second->second;
    }
    // Built under the lock: builds are rare (one per graph), and two threads
    // asking for the same graph then build it once.
    const auto t0 = std::chrono::steady_clock::now();
    Built b = build_plan(s);
    n_.build_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!b.plan) {
      ++n_.build_failures;
      if (failed_.size() >= 4096) failed_.clear();  // bounded; a forgotten failure is only rebuilt once more
      failed_.emplace(s, b.why);
      *why = b.why;
      return nullptr;
    }
    ++n_.plans_built;
    lru_.emplace_front(s, b.plan);
    index_[s] = lru_.begin();
    while (int64_t(lru_.size()) > backend::cuda::kCudnnPlanCacheSize) {
      index_.erase(lru_.back().first);
      lru_.pop_back();  // the plan is freed here, or by its last user
    }
    // cuDNN loads its engine libraries while building the first plans, and
    // their static destructors run at exit in reverse order of registration:
    // registering after the first build frees the plans before those
    // libraries tear down.
    if (!exit_hook_) {
      exit_hook_ = true;
      std::atexit(release_cached_plans);
    }
    return b.plan;
  }

  // One stderr line per distinct reason.
  void log_once(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!logged_.insert(reason).second) return;
    std::fprintf(stderr, "strata: cuDNN fused attention unavailable (%s); using Strata's fused kernel\n",
                 reason.c_str());
  }

  CudnnAttentionCounters counters() {
    std::lock_guard<std::mutex> lock(mu_);
    CudnnAttentionCounters c = n_;
    c.cached = int64_t(lru_.size());
    return c;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    index_.clear();
    lru_.clear();
  }

 private:
  static void release_cached_plans();

  std::mutex mu_;
  std::list<std::pair<Spec, std::shared_ptr<Plan>>> lru_;  // most recently used first
  std::map<Spec, std::list<std::pair<Spec, std::shared_ptr<Plan>>>::iterator> index_;
  std::map<Spec, std::string> failed_;
  std::set<std::string> logged_;
  CudnnAttentionCounters n_;
  bool exit_hook_ = false;
};

// Never destroyed by static destruction (whose order against the CUDA and
// cuDNN libraries is not ours to choose); the exit hook frees the plans.
PlanCache& plan_cache() {
  static PlanCache* c = new PlanCache();
  return *c;
}

void PlanCache::release_cached_plans() { plan_cache().clear(); }

// The plan of s, trying the bias declarations in turn (bias_layout_name).
// Null (with *why, and one log line) when none builds.
std::shared_ptr<Plan> find_plan(Spec& s, std::string* why) {
  std::string reasons;
  const int layouts = s.bias ? kBiasLayouts : 1;
  for (int l = 0; l < layouts; ++l) {
    s.bias_layout = l;
    std::string w;
    if (std::shared_ptr<Plan> p = plan_cache().get(s, &w)) return p;
    if (!reasons.empty()) reasons += "; ";
    reasons += s.bias ? std::string(bias_layout_name(l)) + " bias: " + w : w;
  }
  const std::string core = std::string(s.backward ? "backward" : "forward") + " graph: " + reasons + "; cuDNN " +
                           version_str(runtime_version());
  plan_cache().log_once(core);
  *why = core + " [" + s.str() + "]";
  return nullptr;
}

// ------------------------------------------------------------ execution

struct Bind {
  int64_t uid;
  const void* ptr;
};

// Runs the plan on the compute stream: the variant pack lists the plan's real
// tensors in its order (data pointers from `data`, scalars from the plan) and
// a workspace from the caching allocator (stream order makes its release safe).
void execute(const Plan& p, const std::vector<Bind>& data, Device device) {
  std::vector<void*> ptrs;
  ptrs.reserve(p.uids.size());
  for (int64_t uid : p.uids) {
    const void* ptr = p.by_value(uid);
    for (const Bind& b : data)
      if (ptr == nullptr && b.uid == uid) ptr = b.ptr;
    STRATA_CHECK(ptr != nullptr) << "cuDNN attention: no data bound for tensor " << uid << " of the plan";
    ptrs.push_back(const_cast<void*>(ptr));
  }
  Tensor workspace;
  void* ws = nullptr;
  if (p.workspace > 0) {
    workspace = Tensor::empty({(p.workspace + 7) / 8}, DType::I64, device);
    ws = workspace.raw_data();
  }
  cudnnBackendDescriptor_t pack = nullptr;
  STRATA_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
  struct Release {
    cudnnBackendDescriptor_t d;
    ~Release() { (void)cudnnBackendDestroyDescriptor(d); }
  } release{pack};
  const int64_t n = int64_t(ptrs.size());
  STRATA_CUDNN_CHECK(
      cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, p.uids.data()));
  STRATA_CUDNN_CHECK(
      cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs.data()));
  STRATA_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws));
  STRATA_CUDNN_CHECK(cudnnBackendFinalize(pack));
  cudnnHandle_t handle = cudnn();
  STRATA_CUDNN_CHECK(cudnnSetStream(handle, compute_stream()));
  STRATA_CUDNN_CHECK(cudnnBackendExecute(handle, p.exec, pack));
}

// ------------------------------------------------------------ inputs

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

// What the plans promise cuDNN about q, k, v: a 16-byte aligned start, unit
// stride along the head dim, and the other strides whole multiples of 16
// bytes (8 elements). Views that break it are copied.
Tensor for_cudnn(const Tensor& t) {
  bool ok = aligned16(t) && t.strides()[3] == 1;
  for (int d = 0; d < 3; ++d)
    if (t.size(d) > 1 && (t.strides()[d] <= 0 || t.strides()[d] % 8 != 0)) ok = false;
  return ok ? t : t.clone();
}

// O, dO: contiguous like the plans declare them.
Tensor contiguous_for_cudnn(const Tensor& t) { return t.is_contiguous() && aligned16(t) ? t : t.clone(); }

// Strides as the graph is given them: a size-1 dim (never indexed) gets the
// stride it would have if packed over the dims inside it, so equal layouts
// give equal cache keys and no stride is 0.
Dims strides_of(const Tensor& t) {
  Dims s{t.strides()[0], t.strides()[1], t.strides()[2], t.strides()[3]};
  for (int d = 2; d >= 0; --d)
    if (t.size(d) == 1) s[size_t(d)] = s[size_t(d) + 1] * t.size(d + 1);
  return s;
}

Spec make_spec(bool backward, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
               double scale) {
  Spec s;
  s.device = q.device().index;
  s.backward = backward;
  s.dtype = q.dtype();
  s.B = q.size(0);
  s.H = q.size(1);
  s.Tq = q.size(2);
  s.Tk = k.size(2);
  s.D = q.size(3);
  s.sq = strides_of(q);
  s.sk = strides_of(k);
  s.sv = strides_of(v);
  s.causal = causal_kind(mask, s.Tq, s.Tk);
  s.bias = mask.key_padding.defined();
  const float f = float(scale);
  std::memcpy(&s.scale_bits, &f, sizeof f);
  // cudnn_frontend's backward workaround for runtimes up to 9.15.0
  s.padding_workaround = backward && runtime_version() <= 91500 && s.Tk % 128 != 0;
  return s;
}

bool causal_for_rows(const Spec& s) { return s.causal != Causal::None; }
int64_t offset_for_rows(const Spec& s) { return s.causal == Causal::BottomRight ? s.Tk - s.Tq : 0; }

template <class Fn>
void dispatch_io(DType dt, Fn&& fn) {
  if (dt == DType::BF16) fn(TypeTag<BFloat16>{});
  else fn(TypeTag<Half>{});
}

// ------------------------------------------------------------ forward and backward

std::optional<FusedAttentionForward> forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const AttentionMask& mask, double scale, std::string* why) {
  const std::string no = refusal(q, k, v, mask, 0.0);
  if (!no.empty()) {
    if (why) *why = no;
    return std::nullopt;
  }
  const Tensor qc = for_cudnn(q), kc = for_cudnn(k), vc = for_cudnn(v);
  Spec s = make_spec(false, qc, kc, vc, mask, scale);
  std::string w;
  const std::shared_ptr<Plan> plan = find_plan(s, &w);
  if (!plan) {
    if (why) *why = w;
    return std::nullopt;
  }
  const int64_t B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, D = s.D;
  FusedAttentionForward f;
  f.out = Tensor::empty({B, H, Tq, D}, q.dtype(), q.device());
  f.lse = Tensor::empty({B, H, Tq}, DType::F32, q.device());
  MaskTensors m;
  if (s.bias) m = make_mask_tensors(mask.key_padding, q.dtype(), B, Tk);
  std::vector<Bind> data{{kQ, qc.raw_data()},
                         {kK, kc.raw_data()},
                         {kV, vc.raw_data()},
                         {kO, f.out.raw_data()},
                         {kStats, f.lse.raw_data()}};
  if (s.bias) data.push_back({kBias, m.bias.raw_data()});
  execute(*plan, data, q.device());
  if (s.bias) {
    const int64_t n = B * H * Tq * D;
    dispatch_io(q.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      finish_forward_kernel<T><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
          static_cast<T*>(f.out.raw_data()), static_cast<float*>(f.lse.raw_data()),
          static_cast<const int*>(m.first_key.raw_data()), H, Tq, Tk, D, causal_for_rows(s), offset_for_rows(s), n);
      STRATA_KERNEL_CHECK();
    });
  }
  return f;
}

std::optional<FusedAttentionGrads> backward(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& out, const Tensor& lse, const AttentionMask& mask,
                                            double scale, std::string* why) {
  const char* op = "cuDNN attention backward";
  const std::string no = refusal(q, k, v, mask, 0.0);
  if (!no.empty()) {
    if (why) *why = no;
    return std::nullopt;
  }
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  STRATA_CHECK(g.defined() && g.shape() == q.shape() && g.dtype() == q.dtype() && g.device() == q.device())
      << op << ": output gradient " << (g.defined() ? g.str() : "undefined") << " does not match q " << q.str();
  STRATA_CHECK(out.defined() && out.shape() == q.shape() && out.dtype() == q.dtype() && out.device() == q.device())
      << op << ": forward output " << (out.defined() ? out.str() : "undefined") << " does not match q " << q.str();
  STRATA_CHECK(lse.defined() && lse.shape() == Shape({B, H, Tq}) && lse.dtype() == DType::F32 &&
               lse.is_contiguous() && lse.device() == q.device())
      << op << ": lse must be the forward's contiguous f32 [" << B << ", " << H << ", " << Tq << "], got "
      << (lse.defined() ? lse.str() : "undefined");
  const Tensor qc = for_cudnn(q), kc = for_cudnn(k), vc = for_cudnn(v);
  Spec s = make_spec(true, qc, kc, vc, mask, scale);
  std::string w;
  const std::shared_ptr<Plan> plan = find_plan(s, &w);
  if (!plan) {
    if (why) *why = w;
    return std::nullopt;
  }
  const Device dev = q.device();
  MaskTensors m;
  Tensor dout, stats;
  if (s.bias) {
    // rows that see no key: zero dO, finite statistics (prepare_backward_kernel)
    m = make_mask_tensors(mask.key_padding, q.dtype(), B, Tk);
    dout = Tensor::empty({B, H, Tq, D}, q.dtype(), dev);
    stats = Tensor::empty({B, H, Tq}, DType::F32, dev);
    const int64_t n = B * H * Tq * D;
    dispatch_io(q.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const Strides& gs = g.strides();
      const Strided4<T> gv{static_cast<const T*>(g.raw_data()), gs[0], gs[1], gs[2], gs[3]};
      prepare_backward_kernel<T><<<blocks_for(n), kThreads, 0, compute_stream()>>>(
          gv, static_cast<T*>(dout.raw_data()), static_cast<const float*>(lse.raw_data()),
          static_cast<float*>(stats.raw_data()), static_cast<const int*>(m.first_key.raw_data()), H, Tq, Tk, D,
          causal_for_rows(s), offset_for_rows(s), n);
      STRATA_KERNEL_CHECK();
    });
  } else {
    // without padding every query sees a key (the causal masks taken keep
    // key 0 or more in every row), so lse is finite everywhere
    dout = contiguous_for_cudnn(g);
    stats = contiguous_for_cudnn(lse);  // the plan promises cuDNN 16-byte aligned statistics
  }
  const Tensor o = contiguous_for_cudnn(out);
  FusedAttentionGrads r;
  r.dq = Tensor::empty(q.shape(), q.dtype(), dev);
  r.dk = Tensor::empty(k.shape(), k.dtype(), dev);
  r.dv = Tensor::empty(v.shape(), v.dtype(), dev);
  // dQ accumulates here (atomically); runtimes before 9.6 expect it zeroed
  const Tensor dq_accum = Tensor::empty({B, H, Tq, D}, DType::F32, dev);
  STRATA_CUDA_CHECK(cudaMemsetAsync(dq_accum.raw_data(), 0, dq_accum.nbytes(), compute_stream()));
  const Tensor softmax_sum = Tensor::empty({B, H, Tq}, DType::F32, dev);
  std::vector<Bind> data{{kQ, qc.raw_data()},          {kK, kc.raw_data()},       {kV, vc.raw_data()},
                         {kO, o.raw_data()},           {kDO, dout.raw_data()},    {kStats, stats.raw_data()},
                         {kDQ, r.dq.raw_data()},       {kDK, r.dk.raw_data()},    {kDV, r.dv.raw_data()},
                         {kDQAccum, dq_accum.raw_data()}, {kSoftmaxSum, softmax_sum.raw_data()}};
  if (s.bias) data.push_back({kBias, m.bias.raw_data()});
  Tensor seq_q, seq_kv;
  if (s.padding_workaround) {
    seq_q = Tensor::empty({B}, DType::I32, dev);
    seq_kv = Tensor::empty({B}, DType::I32, dev);
    fill_i32_kernel<<<blocks_for(B), kThreads, 0, compute_stream()>>>(static_cast<int32_t*>(seq_q.raw_data()),
                                                                        int32_t(Tq), B);
    STRATA_KERNEL_CHECK();
    fill_i32_kernel<<<blocks_for(B), kThreads, 0, compute_stream()>>>(static_cast<int32_t*>(seq_kv.raw_data()),
                                                                        int32_t(Tk), B);
    STRATA_KERNEL_CHECK();
    data.push_back({kSeqQ, seq_q.raw_data()});
    data.push_back({kSeqKV, seq_kv.raw_data()});
  }
  execute(*plan, data, dev);
  return r;
}

}  // namespace
}  // namespace strata::cuda::cudnn_attention_impl

namespace strata::backend::cuda {

namespace impl = ::strata::cuda::cudnn_attention_impl;

AttentionPolicy attention_policy() { return impl::parse_policy(); }

std::string cudnn_attention_refusal(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                    double dropout_p) {
  return impl::refusal(q, k, v, mask, dropout_p);
}

bool cudnn_attention_selected(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                              double dropout_p, bool with_backward) {
  if (!q.defined() || !q.device().is_cuda()) return false;
  const AttentionPolicy policy = attention_policy();
  if (policy == AttentionPolicy::Strata) return false;
  const std::string no = impl::refusal(q, k, v, mask, dropout_p);
  if (policy == AttentionPolicy::Cudnn) {
    STRATA_CHECK(no.empty()) << "scaled_dot_product_attention: STRATA_ATTENTION=cudnn, but cuDNN cannot take "
                                "this case: "
                             << no;
    return true;
  }
  // Under auto, a call whose gradients will be taken stays with the fused
  // kernel: cuDNN's backward adds dq up with atomics, so two runs of the same
  // training would differ in the last bits, and the fused kernel's backward is
  // deterministic. Single-query calls (incremental decoding) stay too: their
  // key length grows every step, so each call would build a plan.
  return no.empty() && !with_backward && q.size(2) > 1 && fused_attention_supported(q, k, v);
}

std::optional<FusedAttentionForward> cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                             const AttentionMask& mask, double scale,
                                                             std::string* why) {
  return impl::forward(q, k, v, mask, scale, why);
}

std::optional<FusedAttentionGrads> cudnn_attention_backward(const Tensor& grad_out, const Tensor& q,
                                                            const Tensor& k, const Tensor& v, const Tensor& out,
                                                            const Tensor& lse, const AttentionMask& mask,
                                                            double scale, std::string* why) {
  return impl::backward(grad_out, q, k, v, out, lse, mask, scale, why);
}

CudnnAttentionCounters cudnn_attention_counters() { return impl::plan_cache().counters(); }

int64_t cudnn_runtime_version() { return impl::runtime_version(); }

}  // namespace strata::backend::cuda
