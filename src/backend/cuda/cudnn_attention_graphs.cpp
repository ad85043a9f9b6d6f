// The SDPA graphs of cuDNN's fused flash attention and the cache of their
// finalized plans (see cudnn_attention_graphs.h; the graphs' form is described
// at the top of cudnn_attention.cu).
#ifdef STRATA_WITH_CUDA
#include "cudnn_attention_graphs.h"

#include <cudnn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>

#include "strata/core/error.h"

namespace strata::cuda::cudnn_attention_impl {

using backend::cuda::CudnnAttentionCounters;
using cudnn_graph::BuildError;
using cudnn_graph::Dims;
using cudnn_graph::GraphBuilder;
using cudnn_graph::packed;
using cudnn_graph::plan_for;
using cudnn_graph::T4;
using cudnn_graph::workspace_size;

// A finalized plan with everything it was built from and its by-value scalars.
struct Plan {
  cudnn_graph::Plan graph;
  float scale = 1.f, neg = 0.f, one = 1.f;
  int32_t seq_q = 0, seq_kv = 0;  // by-value (bottom-right causal mask)
};

namespace {

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

// The value a mask selects for hidden scores (what cudnn_frontend passes):
// lowest() below cuDNN 9.10, whose engines prefer it, -inf from 9.10 on.
float mask_value() {
  return runtime_version() < 91000 ? std::numeric_limits<float>::lowest()
                                   : -std::numeric_limits<float>::infinity();
}

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

// The scores of both graphs before masking: qk * scale, plus the bias with key padding.
T4 scaled_scores(GraphBuilder& g, const Spec& s, const T4& qk, const T4& scale) {
  const Dims sdims{s.B, s.H, s.Tq, s.Tk};
  T4 score = g.virt(CUDNN_DATA_FLOAT, sdims);
  g.binary(CUDNN_POINTWISE_MUL, qk, scale, score);
  if (s.bias) {
    const T4 bias = bias_tensor(g, s), biased = g.virt(CUDNN_DATA_FLOAT, sdims);
    g.binary(CUDNN_POINTWISE_ADD, score, bias, biased);
    score = biased;
  }
  return score;
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
  T4 score = scaled_scores(g, s, s0, scale);
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
  T4 score = scaled_scores(g, s, s0, scale);
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

// ------------------------------------------------------------ plans

struct Built {
  std::shared_ptr<Plan> plan;
  std::string why;  // when !plan
};

Built build_plan(const Spec& s) {
  Built r;
  auto plan = std::make_shared<Plan>();
  try {
    GraphBuilder g(plan->graph.descs, cudnn_dtype(s.dtype));
    if (s.backward) backward_graph(g, s);
    else forward_graph(g, s);
    cudnnBackendDescriptor_t graph = g.finish();
    std::string err;
    cudnnBackendDescriptor_t exec = plan_for(plan->graph.descs, graph, &err);
    if (exec == nullptr) {
      r.why = err;
      return r;
    }
    plan->graph.exec = exec;
    plan->graph.workspace = workspace_size(exec);
    plan->graph.uids = g.real_uids();
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

}  // namespace

float Spec::scale() const {
  float s;
  std::memcpy(&s, &scale_bits, sizeof s);
  return s;
}

std::string Spec::str() const {
  std::ostringstream o;
  o << (backward ? "backward" : "forward") << " " << dtype_name(dtype) << " B " << B << " H " << H << " Tq " << Tq
    << " Tk " << Tk << " D " << D
    << (causal == Causal::TopLeft ? " causal" : causal == Causal::BottomRight ? " causal bottom-right" : "")
    << (bias ? std::string(" bias ") + bias_layout_name(bias_layout) : std::string());
  return o.str();
}

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

void execute(const Plan& p, const std::vector<cudnn_graph::Bind>& data, Device device) {
  // the plan's by-value scalars ahead of the data (the pack takes those its graph declares)
  std::vector<cudnn_graph::Bind> all{
      {kScale, &p.scale}, {kNeg, &p.neg}, {kOne, &p.one}, {kSq, &p.seq_q}, {kSkv, &p.seq_kv}};
  all.insert(all.end(), data.begin(), data.end());
  cudnn_graph::execute(p.graph, all, device, "cuDNN attention");
}

CudnnAttentionCounters plan_counters() { return plan_cache().counters(); }

}  // namespace strata::cuda::cudnn_attention_impl
#endif  // STRATA_WITH_CUDA
