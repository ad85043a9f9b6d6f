// NcclCommunicator: the Communicator over NCCL for GPU buffers. Exists only
// in CUDA builds (STRATA_WITH_CUDA). One rank per process, each on the
// process's selected device (cuda::set_device before creating it).
//
// Creation. create(bootstrap) is collective over an existing communicator
// (normally the MPI world): rank 0 makes the NCCL unique id and broadcasts it
// over `bootstrap` as a CPU tensor, then every rank joins. single() makes a
// communicator of this process alone (size 1).
//
// Streams. Collectives run on cuda::comm_stream(): the comm stream first waits
// for an event recorded on the compute stream (the buffers' producers), and
// the compute stream then waits for an event recorded after the collective,
// so the caching allocator's stream-ordered reuse of freed blocks stays safe.
// all_reduce_start leaves out the last step until its handle's wait(): the
// gradient buckets reduce on the comm stream while the backward goes on.
//
// Failure. The communicator is non-blocking (ncclConfig_t blocking = 0): the
// host waits for each collective by polling its completion event and
// ncclCommGetAsyncError. An NCCL error, or no completion within timeout_s,
// aborts the communicator (ncclCommAbort, which also frees a kernel stuck on
// a dead peer) and throws strata::Error naming the rank, the collective and
// NCCL's message; the job then ends instead of hanging. Every later call on
// an aborted communicator throws.
#pragma once
#ifdef STRATA_WITH_CUDA
#include <nccl.h>

#include <memory>
#include <string>

#include "strata/core/error.h"
#include "strata/dist/communicator.h"

// Checks an NCCL call and throws strata::Error naming the call site and
// NCCL's description. ncclInProgress is not an error: a non-blocking
// communicator returns it while the operation completes in the background
// (the caller then polls ncclCommGetAsyncError).
#define STRATA_NCCL_CHECK(call)                                                                        \
  do {                                                                                                 \
    ncclResult_t strata_nccl_rc_ = (call);                                                             \
    STRATA_CHECK(strata_nccl_rc_ == ncclSuccess || strata_nccl_rc_ == ncclInProgress)                  \
        << #call << " failed at " << __FILE__ << ":" << __LINE__ << ": " << ncclGetErrorString(strata_nccl_rc_); \
  } while (0)

namespace strata::dist {

struct NcclOptions {
  // Seconds the host waits for one collective (or the communicator's
  // creation) before aborting; <= 0 waits forever. Must exceed the longest
  // time one rank can spend alone (rank 0 writing a checkpoint).
  double timeout_s = 600;
  // STRATA_NCCL_TIMEOUT_S (seconds) overrides the default; when it is unset,
  // STRATA_COLLECTIVE_TIMEOUT (the MPI collectives' limit) does, so one
  // variable bounds every wait of a job. A malformed value throws naming the
  // variable.
  static NcclOptions from_env();
};

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: this process becomes rank bootstrap.rank()
  // of bootstrap.size(). The name is "nccl <bootstrap's name>".
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap,
                                                  NcclOptions options = NcclOptions::from_env());
  // This process alone (rank 0 of 1), named "nccl local".
  static std::unique_ptr<NcclCommunicator> single(NcclOptions options = NcclOptions::from_env());
  ~NcclCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string name() const override;
  // Buffers: contiguous tensors on this communicator's GPU. all_reduce takes
  // f32, f64, i32, i64, bf16 and f16; the others move any dtype.
  void all_reduce(const Tensor& t, ReduceOp op) override;
  // Enqueued on the comm stream and returned at once: the compute stream runs
  // on (the backward) while NCCL reduces. wait() orders the compute stream
  // after it and polls for its end like the blocking calls (errors, timeout).
  std::unique_ptr<PendingCollective> all_reduce_start(const Tensor& t, ReduceOp op) override;
  // Through a one-element device buffer (waits for the result).
  double all_reduce_scalar(double v, ReduceOp op) override;
  int64_t all_reduce_int(int64_t v, ReduceOp op) override;
  // Grouped ncclSend/ncclRecv of one row chunk per peer.
  void all_to_all(const Tensor& send, const Tensor& recv) override;
  void all_gather(const Tensor& send, const Tensor& recv) override;
  void broadcast(const Tensor& t, int root) override;
  // An all-reduce of one element.
  void barrier() override;
  // ncclCommSplit; the new communicator is named "<name>/split <color>".
  std::unique_ptr<Communicator> split(int color, int key) override;

  // The CUDA device index of the buffers.
  int device() const;
  const NcclOptions& options() const;
  // True once a failure has aborted this communicator.
  bool aborted() const;

  struct Impl;  // holds the ncclComm_t and the stream events

 private:
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::dist
#endif  // STRATA_WITH_CUDA
