// Collective communication between the processes of a job. The same layer
// code runs on one process (LocalCommunicator) and on N (MpiCommunicator on
// CPU buffers; NcclCommunicator on GPU buffers), so MoE dispatch, gradient
// all-reduce and the SMoE pass loop are written once against this interface.
//
// Rules every implementation and caller keeps (docs/distributed.md):
// - every rank of a communicator makes the same calls in the same order;
// - buffer sizes are agreed (all-reduced) before a collective whose shape
//   depends on local data, so no rank waits for a message that never comes;
// - a failure on any rank ends the whole job with an error naming the rank.
// Every implementation checks its arguments with the validate_* functions
// below, so a misuse that would hang or corrupt under MPI already throws on a
// single process.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "strata/core/tensor.h"

namespace strata::dist {

enum class ReduceOp { Sum, Max, Min };
const char* to_string(ReduceOp op);

// A collective started by Communicator::all_reduce_start. wait() returns once
// the result is in the buffer for the caller's next use (on a GPU: once the
// compute stream is ordered after the collective) and throws as the blocking
// call would (a failed or timed-out peer). The buffer must stay alive and
// untouched until then. Destroying a handle that was never waited for orders
// the compute stream after the collective without blocking the host, so the
// buffer's memory is safe to reuse; it reports no error (an unwinding caller
// already has one).
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
  // True when the collective is known to be over (wait() returns at once);
  // asks nothing of the device.
  virtual bool done() const = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // e.g. "mpi world", "local", "mpi world/split 1"
  virtual std::string name() const = 0;

  // In place over a contiguous f32/f64/i32/i64 tensor.
  virtual void all_reduce(const Tensor& t, ReduceOp op) = 0;
  // all_reduce that may still be running when it returns (NCCL: enqueued on
  // the comm stream behind the compute stream's pending work, so the compute
  // stream carries on with the backward meanwhile). Every rank starts the same
  // collectives in the same order, like the blocking calls; no collective of
  // another communicator may be issued between a start here and another
  // rank's start of the same collective (docs/distributed.md, "Overlap").
  // This default runs the blocking all_reduce and returns a finished handle:
  // MPI's blocking algorithms move large buffers faster than its non-blocking
  // ones, and a CPU rank has no idle core to overlap with.
  virtual std::unique_ptr<PendingCollective> all_reduce_start(const Tensor& t, ReduceOp op);
  // Convenience for counters and statistics.
  virtual double all_reduce_scalar(double v, ReduceOp op) = 0;
  virtual int64_t all_reduce_int(int64_t v, ReduceOp op) = 0;
  // send [size * chunk, ...] (contiguous): rows [r*chunk, (r+1)*chunk) go to
  // rank r; recv (same shape) receives rank r's chunk at rows [r*chunk, ...).
  virtual void all_to_all(const Tensor& send, const Tensor& recv) = 0;
  // recv [size * n, ...] holds every rank's send [n, ...] in rank order.
  virtual void all_gather(const Tensor& send, const Tensor& recv) = 0;
  // Contiguous tensor of the same shape and dtype on every rank; root's values win.
  virtual void broadcast(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // A sub-communicator of the ranks passing the same color (>= 0), ordered by
  // key then by rank here (every rank of this communicator must call it).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

// World size 1: collectives are copies or no-ops (after the same argument
// checks as the MPI implementation).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  void all_reduce(const Tensor& t, ReduceOp op) override;
  double all_reduce_scalar(double v, ReduceOp) override { return v; }
  int64_t all_reduce_int(int64_t v, ReduceOp) override { return v; }
  void all_to_all(const Tensor& send, const Tensor& recv) override;
  void all_gather(const Tensor& send, const Tensor& recv) override;
  void broadcast(const Tensor& t, int root) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key) override;
};

// Argument checks shared by the implementations; each throws strata::Error
// with a one-line message naming the collective, the communicator and the shapes.
// Buffers are contiguous and on the communicator's side of the bus: MPI takes
// CPU tensors only, NCCL GPU tensors only, LocalCommunicator either.
// t: defined, contiguous, f32/f64/i32/i64 (also f16/bf16 on a GPU).
void validate_all_reduce(const Tensor& t, const Communicator& c);
// send/recv: same shape and dtype, contiguous, rows divisible by size().
void validate_all_to_all(const Tensor& send, const Tensor& recv, const Communicator& c);
// recv.numel() == size() * send.numel(), same dtype, contiguous.
void validate_all_gather(const Tensor& send, const Tensor& recv, const Communicator& c);
// t: defined, contiguous; 0 <= root < size().
void validate_broadcast(const Tensor& t, int root, const Communicator& c);
void validate_split(int color, const Communicator& c);

}  // namespace strata::dist
