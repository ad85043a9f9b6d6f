// MpiCommunicator (see the header for the waiting strategy).
#ifdef STRATA_WITH_MPI
#include "strata/dist/mpi_communicator.h"

// C API only: the deprecated C++ bindings add nothing and warn under -Wextra.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <sched.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

namespace strata::dist {

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::string name;
  MpiOptions options;
};

namespace {

using Clock = std::chrono::steady_clock;

// Largest element count one MPI call takes (its count argument is an int);
// longer reductions and broadcasts go in pieces.
constexpr int64_t kMaxCount = int64_t(1) << 30;

void check_mpi(int rc, const char* op, const MpiCommunicator::Impl& c) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  STRATA_FAIL() << op << " on '" << c.name << "' (rank " << c.rank << " of " << c.size
                << "): MPI error: " << std::string(msg, size_t(len));
}

MPI_Datatype mpi_type(DType d) {
  switch (d) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::F16:
    case DType::BF16: return MPI_UINT16_T;  // moved, never reduced (validate_all_reduce)
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

// Waits for a started collective (phases in the header comment).
void wait_for(MPI_Request& req, const char* op, const MpiCommunicator::Impl& c) {
  const auto t0 = Clock::now();
  constexpr double kSpinS = 200e-6, kYieldS = 1.0;
  for (uint64_t i = 0;; ++i) {
    int done = 0;
    check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), op, c);
    if (done) return;
    if (i < 64) continue;  // in step: done within microseconds, no clock reads
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (waited < kSpinS) continue;
    if (c.options.timeout_s > 0 && waited > c.options.timeout_s) {
      STRATA_FAIL() << op << " on '" << c.name << "' (rank " << c.rank << " of " << c.size
                    << "): no answer from the other ranks after " << c.options.timeout_s
                    << " s; a rank is stuck, dead or making different collective calls"
                    << " (STRATA_COLLECTIVE_TIMEOUT sets this limit)";
    }
    if (waited < kYieldS)
      sched_yield();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Payloads from this size on are moved by the blocking call after a polled
// barrier: Open MPI's blocking algorithms move large buffers about twice as
// fast as its non-blocking ones (test/bench/comm.cpp), and once every rank
// has reached the barrier the blocking call does not wait for a late rank.
constexpr int64_t kRendezvousBytes = 256 << 10;

// Runs one collective according to the options: Block mode calls `blocking`;
// Poll mode starts `start` and waits (small payloads), or rendezvouses in a
// polled barrier and then calls `blocking` (large ones).
template <class Start, class Blocking>
void run_collective(const MpiCommunicator::Impl& c, const char* op, int64_t bytes, Start start, Blocking blocking) {
  if (c.options.wait == MpiOptions::Wait::Block) {
    check_mpi(blocking(), op, c);
    return;
  }
  MPI_Request req = MPI_REQUEST_NULL;
  if (bytes >= kRendezvousBytes) {
    check_mpi(MPI_Ibarrier(c.comm, &req), op, c);
    wait_for(req, op, c);
    check_mpi(blocking(), op, c);
    return;
  }
  check_mpi(start(&req), op, c);
  wait_for(req, op, c);
}

void reduce_raw(const MpiCommunicator::Impl& c, void* data, int64_t n, DType d, ReduceOp op, const char* what) {
  char* p = static_cast<char*>(data);
  const size_t es = dtype_size(d);
  for (int64_t off = 0; off < n; off += kMaxCount) {
    const int cnt = int(std::min(kMaxCount, n - off));
    void* q = p + size_t(off) * es;
    run_collective(
        c, what, int64_t(cnt) * int64_t(es),
        [&](MPI_Request* r) { return MPI_Iallreduce(MPI_IN_PLACE, q, cnt, mpi_type(d), mpi_op(op), c.comm, r); },
        [&] { return MPI_Allreduce(MPI_IN_PLACE, q, cnt, mpi_type(d), mpi_op(op), c.comm); });
  }
}

int count_or_fail(int64_t n, const char* op, const MpiCommunicator::Impl& c) {
  STRATA_CHECK(n <= INT_MAX) << op << " on '" << c.name << "': " << n
                             << " elements per rank exceed one MPI call's limit of " << INT_MAX;
  return int(n);
}

bool shares_storage(const Tensor& a, const Tensor& b) { return a.impl().storage == b.impl().storage; }

}  // namespace

MpiOptions MpiOptions::from_env() {
  MpiOptions o;
  if (const char* t = std::getenv("STRATA_COLLECTIVE_TIMEOUT"); t && *t) {
    char* end = nullptr;
    double v = std::strtod(t, &end);
    STRATA_CHECK(end && *end == '\0' && v == v)
        << "STRATA_COLLECTIVE_TIMEOUT='" << t << "' is not a number of seconds";
    o.timeout_s = v;
  }
  if (const char* w = std::getenv("STRATA_MPI_WAIT"); w && *w) {
    std::string s = w;
    STRATA_CHECK(s == "poll" || s == "block") << "STRATA_MPI_WAIT='" << s << "': expected poll or block";
    o.wait = s == "poll" ? Wait::Poll : Wait::Block;
  }
  return o;
}

MpiCommunicator::MpiCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world(MpiOptions options) {
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  STRATA_CHECK(inited && !finalized) << "MpiCommunicator::world: MPI is not initialised (create a dist::Environment)";
  auto impl = std::make_unique<Impl>();
  impl->name = "mpi world";
  impl->options = options;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &impl->comm), "MPI_Comm_dup", *impl);
  // Errors come back as codes and become strata::Error (which ends the job
  // with the rank's message) instead of MPI's own abort.
  MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(impl->comm, &impl->rank);
  MPI_Comm_size(impl->comm, &impl->size);
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(std::move(impl)));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
std::string MpiCommunicator::name() const { return impl_->name; }
const MpiOptions& MpiCommunicator::options() const { return impl_->options; }

void MpiCommunicator::all_reduce(const Tensor& t, ReduceOp op) {
  validate_all_reduce(t, *this);
  if (impl_->size == 1 || t.numel() == 0) return;
  reduce_raw(*impl_, t.raw_data(), t.numel(), t.dtype(), op, "all_reduce");
}

double MpiCommunicator::all_reduce_scalar(double v, ReduceOp op) {
  if (impl_->size > 1) reduce_raw(*impl_, &v, 1, DType::F64, op, "all_reduce_scalar");
  return v;
}

int64_t MpiCommunicator::all_reduce_int(int64_t v, ReduceOp op) {
  if (impl_->size > 1) reduce_raw(*impl_, &v, 1, DType::I64, op, "all_reduce_int");
  return v;
}

void MpiCommunicator::all_to_all(const Tensor& send, const Tensor& recv) {
  validate_all_to_all(send, recv, *this);
  const Impl& c = *impl_;
  const int n = count_or_fail(send.numel() / c.size, "all_to_all", c);
  // MPI forbids overlapping send and receive buffers (and MPI_IN_PLACE is
  // patchy for the non-blocking form), so an aliased send goes through a copy.
  Tensor s = shares_storage(send, recv) ? send.clone() : send;
  const MPI_Datatype ty = mpi_type(send.dtype());
  run_collective(
      c, "all_to_all", int64_t(send.nbytes()),
      [&](MPI_Request* r) { return MPI_Ialltoall(s.raw_data(), n, ty, recv.raw_data(), n, ty, c.comm, r); },
      [&] { return MPI_Alltoall(s.raw_data(), n, ty, recv.raw_data(), n, ty, c.comm); });
}

void MpiCommunicator::all_gather(const Tensor& send, const Tensor& recv) {
  validate_all_gather(send, recv, *this);
  const Impl& c = *impl_;
  const int n = count_or_fail(send.numel(), "all_gather", c);
  Tensor s = shares_storage(send, recv) ? send.clone() : send;
  const MPI_Datatype ty = mpi_type(send.dtype());
  run_collective(
      c, "all_gather", int64_t(recv.nbytes()),
      [&](MPI_Request* r) { return MPI_Iallgather(s.raw_data(), n, ty, recv.raw_data(), n, ty, c.comm, r); },
      [&] { return MPI_Allgather(s.raw_data(), n, ty, recv.raw_data(), n, ty, c.comm); });
}

void MpiCommunicator::broadcast(const Tensor& t, int root) {
  validate_broadcast(t, root, *this);
  const Impl& c = *impl_;
  if (c.size == 1) return;
  char* p = static_cast<char*>(t.raw_data());
  const size_t es = dtype_size(t.dtype());
  const MPI_Datatype ty = mpi_type(t.dtype());
  for (int64_t off = 0; off < t.numel(); off += kMaxCount) {
    const int cnt = int(std::min(kMaxCount, t.numel() - off));
    void* q = p + size_t(off) * es;
    run_collective(
        c, "broadcast", int64_t(cnt) * int64_t(es), [&](MPI_Request* r) { return MPI_Ibcast(q, cnt, ty, root, c.comm, r); },
        [&] { return MPI_Bcast(q, cnt, ty, root, c.comm); });
  }
}

void MpiCommunicator::barrier() {
  const Impl& c = *impl_;
  run_collective(
      c, "barrier", 0, [&](MPI_Request* r) { return MPI_Ibarrier(c.comm, r); }, [&] { return MPI_Barrier(c.comm); });
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  validate_split(color, *this);
  auto impl = std::make_unique<Impl>();
  impl->name = impl_->name + "/split " + std::to_string(color);
  impl->options = impl_->options;
  // Order by key, ties by rank here (MPI's rule for equal keys).
  check_mpi(MPI_Comm_split(impl_->comm, color, key, &impl->comm), "split", *impl_);
  MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(impl->comm, &impl->rank);
  MPI_Comm_size(impl->comm, &impl->size);
  return std::unique_ptr<Communicator>(new MpiCommunicator(std::move(impl)));
}

}  // namespace strata::dist
#endif  // STRATA_WITH_MPI
