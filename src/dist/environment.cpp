#include "strata/dist/environment.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#ifdef STRATA_WITH_MPI
// C API only: the deprecated C++ bindings add nothing and warn under -Wextra.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include "strata/dist/mpi_communicator.h"
#endif

namespace strata::dist {

namespace {
Environment* g_current = nullptr;

int positive_int(const char* v) {
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end && *end == '\0' && n > 0 && n < (1L << 30)) ? int(n) : 0;
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}
}  // namespace

LaunchInfo detect_launch(const std::function<const char*(const char*)>& getenv) {
  LaunchInfo li;
  if (const char* f = getenv("STRATA_MPI"); f && *f) {
    std::string s = f;
    STRATA_CHECK(s == "0" || s == "1") << "STRATA_MPI='" << s << "': expected 0 (one process) or 1 (use MPI)";
    if (s == "0") return li;
    li.launched = true;
    li.launcher = "STRATA_MPI";
  }
  // Variables that carry the process count, then ones that only mark a launch.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    if (int n = positive_int(getenv(v))) {
      li.launched = true;
      li.size = n;
      if (li.launcher.empty()) li.launcher = v;
      return li;
    }
  }
  for (const char* v : {"PMIX_RANK", "PMI_RANK"}) {
    const char* x = getenv(v);
    if (x && *x) {
      li.launched = true;
      if (li.launcher.empty()) li.launcher = v;
      if (int n = positive_int(getenv("SLURM_STEP_NUM_TASKS"))) li.size = n;
      return li;
    }
  }
  return li;
}

bool built_with_mpi() {
#ifdef STRATA_WITH_MPI
  return true;
#else
  return false;
#endif
}

Environment::Environment() {
  STRATA_CHECK(g_current == nullptr) << "dist::Environment: one per process, and one already exists";
  LaunchInfo li = detect_launch([](const char* k) { return std::getenv(k); });
  info_.host = host_name();
#ifdef STRATA_WITH_MPI
  if (li.launched) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      STRATA_CHECK(rc == MPI_SUCCESS) << "MPI_Init_thread failed (error " << rc << ")";
      STRATA_CHECK(provided >= MPI_THREAD_FUNNELED)
          << "MPI_Init_thread: this MPI provides thread level " << provided << ", below MPI_THREAD_FUNNELED";
      owns_mpi_ = true;
    }
    auto w = MpiCommunicator::world();
    // Ranks on this node: the shared-memory split (portable, unlike the
    // launcher's *_LOCAL_RANK variables).
    MPI_Comm local = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank(), MPI_INFO_NULL, &local);
    if (local != MPI_COMM_NULL) {
      MPI_Comm_rank(local, &info_.local_rank);
      MPI_Comm_size(local, &info_.local_size);
      MPI_Comm_free(&local);
    }
    info_.rank = w->rank();
    info_.size = w->size();
    info_.mpi = true;
    world_ = std::move(w);
  }
#else
  STRATA_CHECK(!li.launched || li.size <= 1)
      << "this program was built without MPI (MPI=0) but " << li.launcher << " says it is one of " << li.size
      << " processes; rebuild with MPI=1 or start it without mpirun";
#endif
  if (!world_) world_ = std::make_unique<LocalCommunicator>();
  g_current = this;
}

Environment::~Environment() {
  world_.reset();
  g_current = nullptr;
#ifdef STRATA_WITH_MPI
  if (owns_mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
#endif
}

Environment* Environment::current() { return g_current; }

Communicator& world() {
  static LocalCommunicator local;
  return g_current ? g_current->world() : local;
}

std::unique_ptr<Communicator> make_world_communicator() {
#ifdef STRATA_WITH_MPI
  if (g_current && g_current->info().mpi) return MpiCommunicator::world();
#endif
  return std::make_unique<LocalCommunicator>();
}

void abort_job(int exit_code) {
#ifdef STRATA_WITH_MPI
  int inited = 0, finalized = 0, size = 1;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (inited && !finalized) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
#endif
  std::exit(exit_code);
}

}  // namespace strata::dist
