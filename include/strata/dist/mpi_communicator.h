// MpiCommunicator: the Communicator over MPI for CPU buffers. Exists only in
// builds with MPI (STRATA_WITH_MPI, the Makefile's MPI=1); programs get it
// through dist::Environment, which initialises MPI.
//
// Waiting. Each collective is started non-blocking and then waited for in
// three phases: a short spin on MPI_Test (collectives between ranks that are
// in step finish here), then MPI_Test with sched_yield (a rank waiting for a
// slower one gives its core away, which matters when ranks share cores),
// and after a second of waiting MPI_Test every millisecond (a rank waiting
// for a checkpoint write or a stuck peer costs no CPU). A collective that
// waits longer than `timeout_s` throws an error naming the collective and
// the communicator, which ends the job (see docs/distributed.md, "failure").
// `wait = Block` uses the plain blocking MPI calls instead (for comparisons).
#pragma once
#ifdef STRATA_WITH_MPI
#include <memory>
#include <string>

#include "strata/dist/communicator.h"

namespace strata::dist {

struct MpiOptions {
  enum class Wait { Poll, Block };
  Wait wait = Wait::Poll;
  // Seconds a collective may wait for the other ranks before the job is
  // ended; <= 0 waits forever. Must exceed the longest time one rank can
  // spend alone (rank 0 writing a checkpoint).
  double timeout_s = 1800;
  // STRATA_COLLECTIVE_TIMEOUT (seconds) and STRATA_MPI_WAIT (poll | block)
  // override the defaults; a malformed value throws naming the variable.
  static MpiOptions from_env();
};

class MpiCommunicator final : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD (so our traffic never mixes with another
  // library's). MPI must be initialised.
  static std::unique_ptr<MpiCommunicator> world(MpiOptions options = MpiOptions::from_env());
  ~MpiCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string name() const override;
  void all_reduce(const Tensor& t, ReduceOp op) override;
  double all_reduce_scalar(double v, ReduceOp op) override;
  int64_t all_reduce_int(int64_t v, ReduceOp op) override;
  void all_to_all(const Tensor& send, const Tensor& recv) override;
  void all_gather(const Tensor& send, const Tensor& recv) override;
  void broadcast(const Tensor& t, int root) override;
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  const MpiOptions& options() const;

  struct Impl;  // holds the MPI_Comm (keeps mpi.h out of this header)

 private:
  explicit MpiCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::dist
#endif  // STRATA_WITH_MPI
