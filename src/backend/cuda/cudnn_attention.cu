// cuDNN fused flash attention through the cuDNN backend (graph) API
// (contract: strata/backend/cuda/cudnn_attention.h).
//
// There is no cudnn_frontend here, so cudnn_attention_graphs.cpp builds by
// hand (on the backend-graph layer of strata/backend/cuda/cudnn_graph.h) the
// operation graphs that cuDNN's runtime-fusion flash-attention engines match,
// in the form cudnn_frontend's composite SDPA nodes lower to for cuDNN 9
// runtimes (before the single-op SDPA descriptors of 9.13+, which older
// runtimes lack):
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
// defines their graph; a graph cuDNN turns down is remembered and not retried
// (also cudnn_attention_graphs.cpp). This file holds the policy and the
// refusals, the mask kernels, the inputs' preparation, forward and backward.
#include "strata/backend/cuda/cudnn_attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cudnn_attention_graphs.h"
#include "strata/backend/cuda/block_reduce.cuh"
#include "strata/backend/cuda/context.h"
#include "strata/backend/cuda/kernel_utils.cuh"
#include "strata/core/dispatch.h"

namespace strata::cuda::cudnn_attention_impl {

using backend::cuda::AttentionMask;
using backend::cuda::AttentionPolicy;
using backend::cuda::FusedAttentionForward;
using backend::cuda::FusedAttentionGrads;
using cudnn_graph::Bind;

// ------------------------------------------------------------ policy and eligibility

int64_t runtime_version() {
  static const int64_t v = int64_t(cudnnGetVersion());
  return v;
}

std::string version_str(int64_t v) {
  std::ostringstream o;
  o << v / 10000 << "." << (v / 100) % 100 << "." << v % 100;
  return o.str();
}

namespace {

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
cudnn_graph::Dims strides_of(const Tensor& t) {
  cudnn_graph::Dims s{t.strides()[0], t.strides()[1], t.strides()[2], t.strides()[3]};
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

CudnnAttentionCounters cudnn_attention_counters() { return impl::plan_counters(); }

int64_t cudnn_runtime_version() { return impl::runtime_version(); }

}  // namespace strata::backend::cuda
