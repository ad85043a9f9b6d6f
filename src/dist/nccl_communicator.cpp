// NcclCommunicator (see the header for streams and failure handling).
#ifdef STRATA_WITH_CUDA
#include "strata/dist/nccl_communicator.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <thread>
#include <utility>

#include "strata/backend/cuda/context.h"

namespace strata::dist {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Between polls: spin first (collectives between ranks in step finish within
// microseconds), then yield the core, then after a second sleep 1 ms so a
// rank waiting for a slow peer or a checkpoint write costs no CPU.
void pause(uint64_t iteration, double waited_s) {
  if (iteration < 64) return;
  if (waited_s < 1.0)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1, device = 0;
  std::string name;
  NcclOptions options;
  cudaEvent_t ready = nullptr;  // recorded on the compute stream before a collective
  cudaEvent_t done = nullptr;   // recorded on the comm stream after it
  bool aborted = false;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();

  std::string where() const {
    std::ostringstream o;
    o << "'" << name << "' (rank " << rank << " of " << size << ")";
    return o.str();
  }

  void create_events() {
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  }

  void abort() {
    if (comm && !aborted) (void)ncclCommAbort(comm);
    aborted = true;
    comm = nullptr;
  }

  // Aborts the communicator (so a kernel waiting on a dead peer is freed and
  // the job can end) and throws naming the rank, the collective and NCCL's words.
  [[noreturn]] void fail(const char* op, const std::string& why) {
    std::ostringstream o;
    o << op << " on " << where() << ": " << why;
    if (comm) {
      const char* last = ncclGetLastError(comm);
      if (last && *last) o << " (NCCL: " << last << ")";
    }
    abort();
    o << "; the NCCL communicator was aborted";
    throw Error(o.str());
  }

  void check_usable(const char* op) const {
    STRATA_CHECK(!aborted && comm) << op << " on " << where()
                                   << ": the NCCL communicator was aborted after an earlier failure";
  }

  // Result of an NCCL call on this communicator: ncclInProgress is the
  // non-blocking "started"; anything else but success fails.
  void check(ncclResult_t rc, const char* op, const char* call, const char* file, int line) {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    std::ostringstream o;
    o << call << " failed at " << file << ":" << line << ": " << ncclGetErrorString(rc);
    fail(op, o.str());
  }

  [[noreturn]] void timed_out(const char* op, const char* what) {
    std::ostringstream o;
    o << what << " after " << options.timeout_s
      << " s; a rank is stuck, dead or making different collective calls (STRATA_NCCL_TIMEOUT_S, else "
         "STRATA_COLLECTIVE_TIMEOUT, sets this limit)";
    fail(op, o.str());
  }

  // Waits while the last call is still being issued (ncclInProgress).
  void settle(const char* op) {
    const auto t0 = Clock::now();
    for (uint64_t i = 0;; ++i) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
      if (rc != ncclSuccess) fail(op, std::string("ncclCommGetAsyncError failed: ") + ncclGetErrorString(rc));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(op, std::string("NCCL error: ") + ncclGetErrorString(state));
      const double waited = seconds_since(t0);
      if (options.timeout_s > 0 && waited > options.timeout_s) timed_out(op, "not started");
      pause(i, waited);
    }
  }

  // Waits for `event` (a collective's end on the comm stream), watching for
  // NCCL's asynchronous errors and the timeout.
  void wait_event(const char* op, cudaEvent_t event) {
    const auto t0 = Clock::now();
    for (uint64_t i = 0;; ++i) {
      const cudaError_t e = cudaEventQuery(event);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) fail(op, std::string("CUDA error: ") + cudaGetErrorString(e));
      (void)cudaGetLastError();  // "not ready" is no error; do not leave it for the next launch check
      ncclResult_t state = ncclSuccess;
      const ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
      if (rc != ncclSuccess) fail(op, std::string("ncclCommGetAsyncError failed: ") + ncclGetErrorString(rc));
      if (state != ncclSuccess && state != ncclInProgress)
        fail(op, std::string("NCCL error: ") + ncclGetErrorString(state));
      const double waited = seconds_since(t0);
      if (options.timeout_s > 0 && waited > options.timeout_s) timed_out(op, "no completion");
      pause(i, waited);
    }
  }

  // Issues one collective: comm stream after the compute stream's pending
  // work, `enqueue(stream)` makes the NCCL calls, `end` is recorded on the
  // comm stream after them.
  template <class Enqueue>
  void enqueue_after_compute(const char* op, cudaEvent_t end, Enqueue&& enqueue) {
    check_usable(op);
    const cudaStream_t cs = cuda::comm_stream();
    STRATA_CUDA_CHECK(cudaEventRecord(ready, cuda::compute_stream()));
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(cs, ready, 0));
    enqueue(cs);
    settle(op);
    STRATA_CUDA_CHECK(cudaEventRecord(end, cs));
  }

  // One blocking collective: issued as above, compute stream after it, host
  // waits for it.
  template <class Enqueue>
  void run(const char* op, Enqueue&& enqueue) {
    enqueue_after_compute(op, done, std::forward<Enqueue>(enqueue));
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(cuda::compute_stream(), done, 0));
    wait_event(op, done);
  }

  void check_device(const Tensor& t, const char* op, const char* what) const {
    STRATA_CHECK(t.device() == Device::cuda(device))
        << op << " on " << where() << ": " << what << " " << t.str() << " is not on this communicator's device cuda:"
        << device;
  }

  // A device copy of `t` in a fresh block (for buffers NCCL must not see aliased).
  Tensor staged_copy(const Tensor& t) const {
    Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
    if (t.nbytes() > 0)
      STRATA_CUDA_CHECK(cudaMemcpyAsync(c.raw_data(), t.raw_data(), t.nbytes(), cudaMemcpyDeviceToDevice,
                                        cuda::compute_stream()));
    return c;
  }

  // One value through a one-element device buffer: host -> device, all-reduce, back.
  template <class T>
  T reduce_value(NcclCommunicator& self, T v, DType dt, ReduceOp op) {
    Tensor buf = Tensor::empty({1}, dt, Device::cuda(device));
    const cudaStream_t s = cuda::compute_stream();
    STRATA_CUDA_CHECK(cudaMemcpyAsync(buf.raw_data(), &v, sizeof(T), cudaMemcpyHostToDevice, s));
    self.all_reduce(buf, op);
    T out{};
    STRATA_CUDA_CHECK(cudaMemcpyAsync(&out, buf.raw_data(), sizeof(T), cudaMemcpyDeviceToHost, s));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(s));
    return out;
  }
};

#define STRATA_NCCL_COMM_CALL(impl, op, call) (impl).check((call), (op), #call, __FILE__, __LINE__)

namespace {

// An all-reduce in flight on the comm stream. It holds the buffer (so the
// caching allocator cannot hand its memory to a compute kernel while NCCL
// still writes it) and its own end event (several may be in flight).
class NcclPendingAllReduce final : public PendingCollective {
 public:
  NcclPendingAllReduce(NcclCommunicator::Impl& c, Tensor buffer) : c_(c), buffer_(std::move(buffer)) {
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&end_, cudaEventDisableTiming));
  }
  NcclPendingAllReduce(const NcclPendingAllReduce&) = delete;
  NcclPendingAllReduce& operator=(const NcclPendingAllReduce&) = delete;
  ~NcclPendingAllReduce() override {
    // Never waited for (an exception unwinds): keep the compute stream, which
    // may reuse the buffer's memory once it is freed, behind the collective.
    // After an abort the collective's kernel has been freed, so this ends.
    if (!waited_ && issued_) (void)cudaStreamWaitEvent(cuda::compute_stream(), end_, 0);
    (void)cudaEventDestroy(end_);
  }

  cudaEvent_t end() const { return end_; }
  // Not queried: a host poll in the middle of the backward is what overlap avoids.
  bool done() const override { return waited_; }
  void issued() { issued_ = true; }

  void wait() override {
    if (waited_) return;
    waited_ = true;
    if (!issued_) return;  // an empty buffer: nothing was enqueued
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(cuda::compute_stream(), end_, 0));
    c_.check_usable("all_reduce");      // aborted by another collective meanwhile
    c_.wait_event("all_reduce", end_);  // the host sees a failed or silent peer here
  }

 private:
  NcclCommunicator::Impl& c_;
  Tensor buffer_;
  cudaEvent_t end_ = nullptr;
  bool issued_ = false, waited_ = false;
};

}  // namespace

NcclCommunicator::Impl::~Impl() {
  if (comm && !aborted) {
    // Every collective was waited for, so finalising has nothing to flush. While
    // an exception unwinds (a failure elsewhere) the peers may never join the
    // teardown: abort at once instead of waiting for them.
    bool clean = std::uncaught_exceptions() == 0;
    if (clean) {
      const ncclResult_t rc = ncclCommFinalize(comm);
      clean = rc == ncclSuccess || rc == ncclInProgress;
      const auto t0 = Clock::now();
      for (uint64_t i = 0; clean; ++i) {
        ncclResult_t state = ncclInProgress;
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
          clean = false;
          break;
        }
        if (state == ncclSuccess) break;
        const double waited = seconds_since(t0);
        if (options.timeout_s > 0 && waited > options.timeout_s) clean = false;
        pause(i, waited);
      }
    }
    if (clean)
      (void)ncclCommDestroy(comm);
    else
      (void)ncclCommAbort(comm);
    comm = nullptr;
  }
  if (ready) (void)cudaEventDestroy(ready);
  if (done) (void)cudaEventDestroy(done);
}

NcclOptions NcclOptions::from_env() {
  NcclOptions o;
  // STRATA_NCCL_TIMEOUT_S, else the MPI collectives' STRATA_COLLECTIVE_TIMEOUT:
  // a rank that stops answering is noticed by whichever library the others
  // wait in, so a limit set for "the collectives" (the hang test, a job file;
  // jobs/lib/common.sh forwards both variables to the ranks) must hold for
  // NCCL too.
  for (const char* var : {"STRATA_NCCL_TIMEOUT_S", "STRATA_COLLECTIVE_TIMEOUT"}) {
    const char* t = std::getenv(var);
    if (!t || !*t) continue;
    char* end = nullptr;
    const double v = std::strtod(t, &end);
    STRATA_CHECK(end && *end == '\0' && v == v) << var << "='" << t << "' is not a number of seconds";
    o.timeout_s = v;
    break;
  }
  return o;
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclCommunicator::~NcclCommunicator() = default;

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, NcclOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->rank = bootstrap.rank();
  impl->size = bootstrap.size();
  impl->name = "nccl " + bootstrap.name();
  impl->options = options;
  impl->device = cuda::context().device;  // selects the device and creates the streams
  STRATA_CUDA_CHECK(cudaSetDevice(impl->device));
  impl->create_events();

  // Rank 0's unique id reaches every rank through the bootstrap communicator
  // (a CPU tensor: NCCL_UNIQUE_ID_BYTES of id, then a flag saying rank 0 made
  // one, so the other ranks fail with it instead of waiting forever).
  constexpr int64_t kIdWords = NCCL_UNIQUE_ID_BYTES / 4;
  static_assert(NCCL_UNIQUE_ID_BYTES % 4 == 0, "the NCCL id travels as 32-bit words");
  Tensor msg = Tensor::zeros({kIdWords + 1}, DType::I32);
  std::string rank0_error;
  if (impl->rank == 0) {
    ncclUniqueId id;
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc == ncclSuccess) {
      std::memcpy(msg.raw_data(), &id, sizeof id);
      msg.data<int32_t>()[kIdWords] = 1;
    } else {
      rank0_error = ncclGetErrorString(rc);
    }
  }
  bootstrap.broadcast(msg, 0);
  STRATA_CHECK(msg.data<int32_t>()[kIdWords] == 1)
      << "NcclCommunicator::create on " << impl->where() << ": rank 0 could not make an NCCL unique id"
      << (rank0_error.empty() ? "" : ": " + rank0_error);
  ncclUniqueId id;
  std::memcpy(&id, msg.raw_data(), sizeof id);

  ncclConfig_t cfg = nonblocking_config();
  STRATA_NCCL_COMM_CALL(*impl, "NcclCommunicator::create",
                        ncclCommInitRankConfig(&impl->comm, impl->size, id, impl->rank, &cfg));
  impl->settle("NcclCommunicator::create");
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(impl)));
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::single(NcclOptions options) {
  LocalCommunicator local;
  return create(local, options);
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
std::string NcclCommunicator::name() const { return impl_->name; }
int NcclCommunicator::device() const { return impl_->device; }
const NcclOptions& NcclCommunicator::options() const { return impl_->options; }
bool NcclCommunicator::aborted() const { return impl_->aborted; }

void NcclCommunicator::all_reduce(const Tensor& t, ReduceOp op) {
  validate_all_reduce(t, *this);
  Impl& c = *impl_;
  c.check_device(t, "all_reduce", "buffer");
  if (t.numel() == 0) return;
  c.run("all_reduce", [&](cudaStream_t s) {
    STRATA_NCCL_COMM_CALL(c, "all_reduce",
                          ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                                        nccl_op(op), c.comm, s));
  });
}

std::unique_ptr<PendingCollective> NcclCommunicator::all_reduce_start(const Tensor& t, ReduceOp op) {
  validate_all_reduce(t, *this);
  Impl& c = *impl_;
  c.check_device(t, "all_reduce", "buffer");
  auto pending = std::make_unique<NcclPendingAllReduce>(c, t);
  if (t.numel() == 0) return pending;
  c.enqueue_after_compute("all_reduce", pending->end(), [&](cudaStream_t s) {
    STRATA_NCCL_COMM_CALL(c, "all_reduce",
                          ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()),
                                        nccl_op(op), c.comm, s));
  });
  pending->issued();
  return pending;
}

double NcclCommunicator::all_reduce_scalar(double v, ReduceOp op) {
  return impl_->reduce_value<double>(*this, v, DType::F64, op);
}

int64_t NcclCommunicator::all_reduce_int(int64_t v, ReduceOp op) {
  return impl_->reduce_value<int64_t>(*this, v, DType::I64, op);
}

void NcclCommunicator::all_to_all(const Tensor& send, const Tensor& recv) {
  validate_all_to_all(send, recv, *this);
  Impl& c = *impl_;
  c.check_device(send, "all_to_all", "send");
  c.check_device(recv, "all_to_all", "recv");
  if (send.numel() == 0) return;
  // Chunk r is sent to rank r while rank r's chunk lands in the same rows:
  // an aliased send is read from a copy.
  const Tensor s = send.impl().storage == recv.impl().storage ? c.staged_copy(send) : send;
  const size_t chunk = send.nbytes() / size_t(c.size);
  const char* sp = static_cast<const char*>(s.raw_data());
  char* rp = static_cast<char*>(recv.raw_data());
  c.run("all_to_all", [&](cudaStream_t stream) {
    STRATA_NCCL_COMM_CALL(c, "all_to_all", ncclGroupStart());
    // Every send/recv is issued and the group closed even after a failed
    // call, so NCCL's per-thread group state is left balanced.
    ncclResult_t first = ncclSuccess;
    for (int r = 0; r < c.size; ++r) {
      const ncclResult_t a = ncclSend(sp + size_t(r) * chunk, chunk, ncclUint8, r, c.comm, stream);
      const ncclResult_t b = ncclRecv(rp + size_t(r) * chunk, chunk, ncclUint8, r, c.comm, stream);
      if (first == ncclSuccess || first == ncclInProgress) first = (a != ncclSuccess && a != ncclInProgress) ? a : b;
    }
    const ncclResult_t end = ncclGroupEnd();
    STRATA_NCCL_COMM_CALL(c, "all_to_all", first);
    STRATA_NCCL_COMM_CALL(c, "all_to_all", end);
  });
}

void NcclCommunicator::all_gather(const Tensor& send, const Tensor& recv) {
  validate_all_gather(send, recv, *this);
  Impl& c = *impl_;
  c.check_device(send, "all_gather", "send");
  c.check_device(recv, "all_gather", "recv");
  if (send.numel() == 0) return;
  const size_t bytes = send.nbytes();
  // NCCL allows one aliasing: send is exactly this rank's slot of recv (in place).
  const bool in_place = send.raw_data() == static_cast<char*>(recv.raw_data()) + size_t(c.rank) * bytes;
  const Tensor s = (!in_place && send.impl().storage == recv.impl().storage) ? c.staged_copy(send) : send;
  c.run("all_gather", [&](cudaStream_t stream) {
    STRATA_NCCL_COMM_CALL(c, "all_gather",
                          ncclAllGather(s.raw_data(), recv.raw_data(), bytes, ncclUint8, c.comm, stream));
  });
}

void NcclCommunicator::broadcast(const Tensor& t, int root) {
  validate_broadcast(t, root, *this);
  Impl& c = *impl_;
  c.check_device(t, "broadcast", "buffer");
  if (t.numel() == 0) return;
  c.run("broadcast", [&](cudaStream_t stream) {
    STRATA_NCCL_COMM_CALL(c, "broadcast",
                          ncclBroadcast(t.raw_data(), t.raw_data(), t.nbytes(), ncclUint8, root, c.comm, stream));
  });
}

void NcclCommunicator::barrier() {
  Impl& c = *impl_;
  c.check_usable("barrier");
  Tensor one = Tensor::empty({1}, DType::I32, Device::cuda(c.device));
  STRATA_CUDA_CHECK(cudaMemsetAsync(one.raw_data(), 0, sizeof(int32_t), cuda::compute_stream()));
  c.run("barrier", [&](cudaStream_t stream) {
    STRATA_NCCL_COMM_CALL(c, "barrier", ncclAllReduce(one.raw_data(), one.raw_data(), 1, ncclInt32, ncclSum,
                                                      c.comm, stream));
  });
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  validate_split(color, *this);
  Impl& c = *impl_;
  c.check_usable("split");
  auto impl = std::make_unique<Impl>();
  impl->name = c.name + "/split " + std::to_string(color);
  impl->options = c.options;
  impl->device = c.device;
  impl->create_events();
  // Ranks of one color, ordered by key and then by rank here (NCCL's rule,
  // the same as MPI_Comm_split's).
  ncclConfig_t cfg = nonblocking_config();
  STRATA_NCCL_COMM_CALL(c, "split", ncclCommSplit(c.comm, color, key, &impl->comm, &cfg));
  c.settle("split");
  STRATA_CHECK(impl->comm != nullptr) << "split of " << c.where() << ": NCCL returned no communicator for color "
                                      << color;
  impl->rank = c.rank;  // named in messages until the new rank is known
  impl->size = c.size;
  impl->settle("split");
  STRATA_NCCL_COMM_CALL(*impl, "split", ncclCommUserRank(impl->comm, &impl->rank));
  STRATA_NCCL_COMM_CALL(*impl, "split", ncclCommCount(impl->comm, &impl->size));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(impl)));
}

}  // namespace strata::dist
#endif  // STRATA_WITH_CUDA
