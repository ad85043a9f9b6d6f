// Token-to-expert routing bookkeeping for one gate pass: expert choices,
// capacity positions and keep flags (GShard/fairseq top-2 and Switch top-1,
// docs/smoe_spec.md section 1.2), and the slot map that dispatch/combine use.
// Everything here is plain C++ over contiguous buffers, outside autograd: the
// choices are constants of the backward pass; only the gate probabilities
// gathered at these positions carry gradients (moe/gate.h). A GPU gate makes
// the same decisions on the device (DeviceRouting below, kernels in
// strata/backend/cuda/routing.h) and brings them here in one transfer.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/config/options.h"
#include "strata/core/philox.h"
#include "strata/core/tensor.h"

namespace strata::moe {

// Capacity C per expert for a pass over S buffer rows with V visible experts.
// Training (and evaluation with eval_fraction <= 0): ceil(capacity_factor * k * ceil(S / V)),
// k = 1 for top-1, 2 for top-2; evaluation: ceil(eval_fraction * S).
int64_t expert_capacity(int64_t S, int64_t V, bool top1, double capacity_factor, bool training,
                        double eval_fraction);

struct RouteOptions {
  bool top1 = false;
  config::SecondExpertPolicy policy = config::SecondExpertPolicy::Sampling;
  bool normalize_before_dropping = false;  // only used by the Random policy's keep test
};

// The routing of the n real rows of one pass over V visible experts (local ids
// 0..V-1; global id = stratum offset + local id).
struct Routing {
  int64_t rows = 0, experts = 0, capacity = 0;
  int k = 2;                          // choices per token (1 or 2)
  std::vector<int32_t> e1, e2;        // e2 = -1: no second expert (top-1, V = 1, Random policy drop)
  std::vector<int64_t> loc1, loc2;    // capacity positions; >= capacity means dropped
  std::vector<uint8_t> keep1, keep2;  // the choice got a slot
  std::vector<int64_t> first_count;   // per expert: first choices before capacity (colsum mask1)
  // 1 + the largest kept position over all experts (0 when nothing is kept):
  // slots at or beyond it are empty for every expert.
  int64_t used_capacity() const;
};

// A routing made on a GPU (backend::cuda::route, strata/backend/cuda/routing.h):
// Routing's per-row arrays on the device, in one i32 buffer so that a single
// transfer brings them to the host (backend::cuda::download_routing). The
// keep flags are not stored; they are what route sets them to:
// keep1 = loc1 < capacity, keep2 = e2 >= 0 && loc2 < capacity.
struct DeviceRouting {
  int64_t rows = 0, experts = 0, capacity = 0;
  int k = 2;
  Tensor packed;  // i32 [4 * rows + experts] on a GPU: e1 | e2 | loc1 | loc2 | first_count
  bool defined() const { return packed.defined(); }
};

// probs/logits: [n, V] row-major (the gate softmax and its logits). noise
// supplies Gumbel(0,1) noise (element r*V + e) for the Sampling policy and a
// uniform (element r) for Random; it may be null for Argmax or top-1.
template <class T>
Routing route(const T* probs, const T* logits, int64_t n, int64_t V, int64_t capacity, const RouteOptions& opt,
              const PhiloxStream* noise);

// Where every kept choice sits in the dispatch buffer of `buffer_experts`
// experts x `capacity` slots (capacity = the used capacity, see
// Routing::used_capacity): slot = (expert_base + e) * capacity + loc.
struct SlotMap {
  int64_t rows = 0, k = 0, slots = 0;
  std::vector<int64_t> row_slot;  // [rows * k]: slot of choice j of row r, -1 = not dispatched
  std::vector<int64_t> slot_src;  // [slots]: r * k + j that fills the slot, -1 = empty slot
};
SlotMap make_slot_map(const Routing& r, int64_t expert_base, int64_t buffer_experts, int64_t capacity);

// EOM training masks (docs/moe.md): choice j of pass row i, routed to global
// expert g = expert_offset + e, is dropped when element i * experts + g of the
// pass's stream is below p (experts = all experts of the block). A row never
// picks one expert twice, so its choices draw distinct elements; the key holds
// no capacity or slot, so the mask does not depend on the buffer sizes (which
// under expert parallelism depend on the other ranks' batches). Returns keep
// [rows * k]: 1 or 0 (a choice without an expert keeps 1).
std::vector<double> eom_keep(const Routing& r, int64_t expert_offset, int64_t experts, const PhiloxStream& stream,
                             double p);

}  // namespace strata::moe
