// Gradient all-reduce for data parallelism, and the check that replicas hold
// the same parameters.
//
// all_reduce_gradients sums the selected parameters' gradients over a
// communicator: gradients are packed into flat buckets of about
// `bucket_bytes` (one all-reduce per bucket; a parameter larger than a bucket
// is reduced in place on its own), parameters in registration order, so
// every rank builds the same buckets. A parameter that has no gradient on
// some rank counts as zeros there; one that has none on every rank keeps
// none (Adam then skips it, as it would on one process). The predicate picks
// which parameters this communicator owns: shared weights over the world,
// expert weights over their replica group (docs/distributed.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "strata/dist/communicator.h"

namespace strata::dist {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using ParamFilter = std::function<bool(const std::string& name)>;  // empty = every parameter

struct GradSyncOptions {
  // 4 MB: on CPU shared memory small buckets (1 MB fastest, 4 MB next)
  // beat 25 MB (PyTorch DDP's default, sized for GPU overlap) by up to 2x,
  // see docs/performance.md; 4 MB keeps the call count (and the per-call
  // latency over a network) low.
  size_t bucket_bytes = size_t(4) << 20;
};

// Which parameters (indices into the list given) share a bucket.
struct Bucket {
  DType dtype = DType::F32;
  std::vector<size_t> params;
  int64_t numel = 0;
};
// Consecutive parameters of one dtype fill a bucket until the next would
// push it past bucket_bytes; every bucket holds at least one parameter.
std::vector<Bucket> plan_buckets(const std::vector<std::pair<DType, int64_t>>& params, size_t bucket_bytes);

struct GradSyncStats {
  int64_t buckets = 0;       // all-reduce calls for gradients
  int64_t bytes = 0;         // gradient bytes reduced
  int64_t params = 0;        // parameters reduced
  int64_t without_grad = 0;  // selected parameters no rank had a gradient for
};

GradSyncStats all_reduce_gradients(Communicator& comm, const NamedTensors& params, const ParamFilter& select = {},
                                   const GradSyncOptions& options = {});

// 64-bit hash of each selected parameter's bytes (shape and dtype included).
std::vector<int64_t> parameter_hashes(const NamedTensors& params, const ParamFilter& select = {});

// Throws strata::Error naming the first parameter whose values differ
// between the ranks of `comm` and the ranks that disagree (`when` goes into
// the message, e.g. "at update 500"). Collective.
void check_replicas_agree(Communicator& comm, const NamedTensors& params, const std::string& when,
                          const ParamFilter& select = {});

}  // namespace strata::dist
