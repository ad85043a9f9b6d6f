// The process's place in a job. A program creates one Environment at start
// (strata-train does in train_main): when this build has MPI and an MPI
// launcher (mpirun, mpiexec, srun) started the process, it calls
// MPI_Init_thread (FUNNELED: only the main thread talks MPI; OpenMP threads
// compute) and the world is an MpiCommunicator; otherwise the world is a
// LocalCommunicator and MPI is never touched, so a plain `strata-train
// cfg.yaml` and an MPI=0 build run as one process. The destructor calls
// MPI_Finalize. A build without MPI started by a launcher with more than one
// process refuses to run (each process would train alone into one save_dir).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "strata/dist/communicator.h"

namespace strata::dist {

struct ProcessInfo {
  int rank = 0, size = 1;              // in the world
  int local_rank = 0, local_size = 1;  // among the ranks on this node (shared memory)
  std::string host;
  bool mpi = false;  // the world is an MpiCommunicator
};

// What the environment variables say about how this process was started.
struct LaunchInfo {
  bool launched = false;  // an MPI launcher started it
  int size = 1;           // the launcher's process count, when it says (else 1)
  std::string launcher;   // the variable that told, e.g. "OMPI_COMM_WORLD_SIZE"
};
// Reads OMPI_COMM_WORLD_SIZE (Open MPI), PMI_SIZE / PMI_RANK (MPICH, Intel MPI,
// srun --mpi=pmi2), PMIX_RANK (PMIx: srun, Open MPI 5), MV2_COMM_WORLD_SIZE
// (MVAPICH). STRATA_MPI=0 forces a single process, STRATA_MPI=1 forces MPI.
// `getenv` is injectable for tests.
LaunchInfo detect_launch(const std::function<const char*(const char*)>& getenv);

// True when this build has MPI.
bool built_with_mpi();

class Environment {
 public:
  // At most one per process. Throws strata::Error when MPI cannot start.
  Environment();
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  const ProcessInfo& info() const { return info_; }
  Communicator& world() { return *world_; }
  // The live environment, or null.
  static Environment* current();

 private:
  ProcessInfo info_;
  std::unique_ptr<Communicator> world_;
  bool owns_mpi_ = false;
};

// The world of the current Environment; a LocalCommunicator when there is none.
Communicator& world();
// A new communicator over the same processes as world(): an MpiCommunicator
// (a fresh MPI_Comm_dup) when the Environment runs MPI, else a LocalCommunicator.
// For libraries that want their own traffic separate from the trainer's.
std::unique_ptr<Communicator> make_world_communicator();

// Ends the whole job with `exit_code`: MPI_Abort over the world when MPI
// runs with more than one rank (the launcher then stops every process),
// otherwise std::exit. Callers print their one-line reason first.
[[noreturn]] void abort_job(int exit_code);

}  // namespace strata::dist
