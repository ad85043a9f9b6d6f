// Internal to the cuDNN attention (cudnn_attention.cu): the SDPA forward and
// backward graphs cuDNN's flash-attention engines match, and the cache of
// their finalized plans (cudnn_attention_graphs.cpp). Only for CUDA builds
// (STRATA_WITH_CUDA).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "strata/backend/cuda/cudnn_attention.h"
#include "strata/backend/cuda/cudnn_graph.h"
#include "strata/core/dtype.h"

namespace strata::cuda::cudnn_attention_impl {

// The uids of the graphs' real tensors (the variant pack's).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kBias, kScale, kNeg, kSkv, kSq,
  kDO, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum, kSeqQ, kSeqKV, kOne
};
static_assert(kOne < cudnn_graph::kFirstVirtualUid, "real uids must stay below the virtual ones");

enum class Causal : int { None = 0, TopLeft = 1, BottomRight = 2, Other = 3 };

// The cuDNN runtime's version (cudnnGetVersion(), e.g. 91900) and as "9.19.0"
// (cudnn_attention.cu).
int64_t runtime_version();
std::string version_str(int64_t v);

// Row stride of the bias in elements: 16 bytes, the alignment cuDNN is promised.
inline int64_t bias_ld(int64_t Tk) { return (Tk + 7) / 8 * 8; }

// Everything that defines a graph: the plan cache key.
struct Spec {
  int device = 0;
  bool backward = false;
  DType dtype = DType::BF16;
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0;
  cudnn_graph::Dims sq{}, sk{}, sv{};  // strides of q, k, v as [B, H, T, D] (size-1 dims normalized)
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
  float scale() const;
  std::string str() const;  // for messages
};

// A finalized plan of a graph and its by-value scalars (cudnn_attention_graphs.cpp).
struct Plan;

// The plan of s, trying the bias declarations in turn (bias_layout_name).
// Null (with *why, and one log line) when none builds.
std::shared_ptr<Plan> find_plan(Spec& s, std::string* why);

// Runs the plan on the compute stream with the data of its real tensors (its
// by-value scalars come from the plan).
void execute(const Plan& p, const std::vector<cudnn_graph::Bind>& data, Device device);

// The plan cache's counters (cudnn_attention_counters()).
backend::cuda::CudnnAttentionCounters plan_counters();

}  // namespace strata::cuda::cudnn_attention_impl
