// Operation graphs built by hand with the cuDNN backend (graph) API (there is
// no cudnn_frontend here), for any fused computation cuDNN's engines match:
// ownership of the backend descriptors, the tensors and operations of a graph,
// an execution plan from cuDNN's heuristics, and running a plan with a variant
// pack on the compute stream. Nothing here knows what a graph computes: the
// caller picks the real tensors' uids and the operations (the SDPA graphs of
// src/backend/cuda/cudnn_attention_graphs.cpp are one such caller).
//
// Building reports a step cuDNN turns down by throwing BuildError (naming the
// step and cuDNN's status), so a caller can treat an unsupported graph as
// unavailable rather than as an error; running a finished plan checks with
// STRATA_CUDNN_CHECK and throws strata::Error. Host code only; only for CUDA
// builds (STRATA_WITH_CUDA).
#pragma once
#include <cudnn.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "strata/core/device.h"

namespace strata::cuda::cudnn_graph {

// Dims or strides of a 4-d tensor, the rank every tensor of these graphs has.
using Dims = std::array<int64_t, 4>;

// The strides of a packed (row-major, contiguous) tensor of dims d.
inline Dims packed(const Dims& d) { return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1}; }

// A graph build step cuDNN turned down; caught where a failed build is not an
// error (e.g. at the top of the attention plan build).
struct BuildError {
  std::string what;
};

// Throws BuildError "<step>: <cuDNN's status>" unless s is success.
void must(cudnnStatus_t s, const char* step);

// Owns backend descriptors; destroys them in reverse order of creation. The
// statuses are ignored: at exit the CUDA context may already be unusable, and
// a descriptor that cannot be destroyed then is leaked, not an error.
class Descs {
 public:
  Descs() = default;
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
  ~Descs();
  // A new descriptor of the type, owned here; `what` names it in a BuildError.
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type, const char* what);
  // Takes ownership of a descriptor created elsewhere.
  void adopt(cudnnBackendDescriptor_t d) { list_.push_back(d); }

 private:
  std::vector<cudnnBackendDescriptor_t> list_;
};

// Sets an attribute of d (count values of the type); BuildError naming `step` if refused.
void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
              int64_t count, const void* values, const char* step);
// Sets an attribute that is one other descriptor.
void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value,
              const char* step);

// Uids of virtual tensors count up from here, so a caller's real tensors take
// uids below it.
constexpr int64_t kFirstVirtualUid = 1000;

// A tensor of the graph: its descriptor, dims and strides.
struct T4 {
  cudnnBackendDescriptor_t desc = nullptr;
  Dims dims{};
  Dims strides{};
};

// Builds one operation graph: tensors (every real one listed for the variant
// pack, in creation order), then operations in topological order. Every
// descriptor is owned by the Descs given; each step throws BuildError.
class GraphBuilder {
 public:
  // io: the data type of the graph's real (stored) tensors, for the caller's use.
  GraphBuilder(Descs& descs, cudnnDataType_t io) : d_(descs), io_(io) {}

  cudnnDataType_t io() const { return io_; }

  // A real tensor, given to the plan at run time under uid.
  T4 real(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides);
  // A real scalar passed by value ([1,1,1,1]).
  T4 by_value(int64_t uid, cudnnDataType_t dt);
  // A virtual tensor (never stored), packed or with the strides given.
  T4 virt(cudnnDataType_t dt, const Dims& dims) { return virt(dt, dims, packed(dims)); }
  T4 virt(cudnnDataType_t dt, const Dims& dims, const Dims& strides);

  // y = op(x[, b[, t]]) with the given math precision; axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, const T4& x, const T4* b, const T4* t,
                 const T4& y, int64_t axis = -1);
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
              const T4* n_override = nullptr, const T4* k_override = nullptr);

  // y = reduce(x) over the dims where y has size 1.
  void reduction(cudnnReduceTensorOp_t mode, const T4& x, const T4& y);

  // y = x seen with y's dims and strides (e.g. a transpose of the last two dims).
  void reshape(const T4& x, const T4& y);

  // The finalized operation graph of every operation added.
  cudnnBackendDescriptor_t finish();

  // The uids of the real tensors, in creation order: the plan's variant pack.
  const std::vector<int64_t>& real_uids() const { return real_uids_; }

 private:
  T4 tensor(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides, bool is_virtual,
            bool by_value);

  Descs& d_;
  cudnnDataType_t io_;
  int64_t next_virtual_ = kFirstVirtualUid;
  std::vector<cudnnBackendDescriptor_t> ops_;
  std::vector<int64_t> real_uids_;
};

// Heuristics (mode A, then the fallback list) for the graph; the first engine
// configuration that finalizes into a plan wins (owned by descs, with
// everything it was built from). Null when none does, with *why collecting
// each mode's last failure. Building an engine's plan needs the device.
cudnnBackendDescriptor_t plan_for(Descs& descs, cudnnBackendDescriptor_t graph, std::string* why);

// The workspace a finalized execution plan needs, in bytes.
int64_t workspace_size(cudnnBackendDescriptor_t plan);

// A finalized plan with everything it was built from.
struct Plan {
  Descs descs;  // destroyed with the plan, in reverse order (the plan last created, first destroyed)
  cudnnBackendDescriptor_t exec = nullptr;
  int64_t workspace = 0;
  std::vector<int64_t> uids;  // the graph's real tensors: the variant pack, in this order
};

// The data of one real tensor at run time.
struct Bind {
  int64_t uid;
  const void* ptr;
};

// Runs the plan on the compute stream: the variant pack lists the plan's real
// tensors in its order, each with the pointer of the first Bind of its uid in
// `data` (a missing one throws, naming `who`), and a workspace from the
// caching allocator (stream order makes its release safe).
void execute(const Plan& p, const std::vector<Bind>& data, Device device, const char* who);

}  // namespace strata::cuda::cudnn_graph
