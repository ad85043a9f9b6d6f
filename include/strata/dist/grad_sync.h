// Gradient all-reduce for data parallelism, and the check that replicas hold
// the same parameters.
//
// GradientReducer sums the selected parameters' gradients over a
// communicator in flat buckets of about `bucket_bytes` (one all-reduce per
// bucket; a parameter larger than a bucket is reduced in place on its own).
// Buckets hold the selected parameters in reverse registration order, the
// order in which a backward finishes their gradients, and are planned from
// the parameter list alone, so every rank builds the same buckets. Fed with
// gradient_ready() from the backward (autograd::LeafReadyFn), it starts each
// bucket's all-reduce as soon as the bucket and every bucket before it are
// complete, so on a GPU the reduction runs on the comm stream while the rest
// of the backward runs; finish() starts the buckets not started yet (their
// parameters had no gradient here), waits for all, and writes the sums back.
// Every rank starts the buckets in the same order whatever its backward
// reached. A parameter that has no gradient on some rank counts as zeros
// there; one that has none on every rank keeps none (Adam then skips it, as
// it would on one process). The predicate picks which parameters a reducer
// owns: shared weights over the world, expert weights over their replica
// group (docs/distributed.md).
//
// all_reduce_gradients is a reducer finished at once (after the backward).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
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
  int64_t params = 0;        // parameters reduced (every selected one)
  int64_t without_grad = 0;  // selected parameters no rank had a gradient for
};

class GradientReducer {
 public:
  // Plans the buckets; no communication yet. `comm` and the parameters must
  // outlive the reducer.
  GradientReducer(Communicator& comm, const NamedTensors& params, const ParamFilter& select = {},
                  const GradSyncOptions& options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // `leaf`'s gradient is final for this update (a parameter not selected, or
  // not one of the list, is ignored). Starts every bucket that is now complete
  // and has only started buckets before it.
  void gradient_ready(const Tensor& leaf);
  // Starts the remaining buckets, waits for every all-reduce and writes the
  // sums into the gradients. Collective; call once.
  GradSyncStats finish();
  // Buckets started before finish() (by gradient_ready).
  int64_t started_early() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
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
