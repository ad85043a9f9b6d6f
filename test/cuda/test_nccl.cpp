// NcclCommunicator over the process world. Written for any world size W: the
// plain GPU test run is one process (W = 1: every collective still goes
// through NCCL on the comm stream and must give the identity / a copy);
// on a machine with several GPUs,
//   mpirun -np <GPUs> build/strata-cuda-tests "[nccl]"
// runs the same checks between W ranks, one GPU each (rank = local rank).
// Covered: every dtype, odd and large sizes, aliased buffers, buffers written
// on the compute stream just before the call, split, argument errors naming
// the collective, and the buffer rules shared by all communicators (NCCL: GPU
// only; MPI and other host communicators: CPU only; LocalCommunicator: both).
#include <cstdlib>
#include <memory>
#include <vector>

#include "cuda_test_util.h"
#include "strata/dist/communicator.h"
#include "strata/dist/environment.h"
#include "strata/dist/nccl_communicator.h"

using namespace strata;
using dist::ReduceOp;

namespace {

// The process world (MPI under mpirun, else this process alone); finalised at exit.
dist::Environment& environment() {
  static std::unique_ptr<dist::Environment> env = std::make_unique<dist::Environment>();
  return *env;
}

// One NCCL communicator over the world for the binary (creation costs NCCL's
// bootstrap). Never destroyed: tearing NCCL down during static destruction
// would race the driver's own teardown (the split test destroys its
// communicators normally). With several ranks each takes the GPU of its local rank.
dist::NcclCommunicator& nccl() {
  static dist::NcclCommunicator* c = [] {
    dist::Environment& env = environment();
    if (env.info().size > 1) cuda::set_device(env.info().local_rank % cuda::device_count());
    return dist::NcclCommunicator::create(env.world()).release();
  }();
  return *c;
}

Device gpu_device() { return Device::cuda(nccl().device()); }
Tensor on_gpu(const Tensor& t) { return t.to(gpu_device()); }
std::vector<double> values(const Tensor& t) { return test::cpu(t).to_vector<double>(); }

// x[i] = base + i, as stored in dt (rounded for 16-bit floats, truncated for integers).
Tensor iota(int64_t n, double base, DType dt) {
  Tensor t = Tensor::empty({n}, DType::F64);
  for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = base + double(i);
  return t.to(dt);
}

// The doubles `v` stored in dt and read back (what a copy of them in dt holds).
std::vector<double> as_stored(const std::vector<double>& v, DType dt) {
  return Tensor::from_vector(v, {int64_t(v.size())}).to(dt).to_vector<double>();
}

// A host-only communicator (as MpiCommunicator is): validates like it.
class HostOnly final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "host only"; }
  void all_reduce(const Tensor& t, ReduceOp) override { dist::validate_all_reduce(t, *this); }
  double all_reduce_scalar(double v, ReduceOp) override { return v; }
  int64_t all_reduce_int(int64_t v, ReduceOp) override { return v; }
  void all_to_all(const Tensor& s, const Tensor& r) override { dist::validate_all_to_all(s, r, *this); }
  void all_gather(const Tensor& s, const Tensor& r) override { dist::validate_all_gather(s, r, *this); }
  void broadcast(const Tensor& t, int root) override { dist::validate_broadcast(t, root, *this); }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<HostOnly>(); }
};


}  // namespace

TEST_CASE("NcclCommunicator spans the world, one GPU per rank", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  dist::Communicator& w = environment().world();
  CHECK(c.rank() == w.rank());
  CHECK(c.size() == w.size());
  CHECK(c.name() == "nccl " + w.name());
  CHECK(c.device() == cuda::context().device);
  CHECK_FALSE(c.aborted());
  c.barrier();
}

TEST_CASE("NCCL all_reduce sums, maxes and mins every dtype", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), r = c.rank();
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I32, DType::I64, DType::BF16, DType::F16);
  const int64_t n = GENERATE(1, 91, 3 * 1025);
  INFO(dtype_name(dt) << " n=" << n);
  // Rank r holds x_i + r with x_i = i - 45 (f32/f64/integers: exact sums).
  // 16-bit floats: every rank holds the same x_i, so max = min = x_i; their
  // sum is checked for W <= 2 only, where x + x = 2x is exact (a ring's
  // partial 3x may round).
  const bool half = dt == DType::BF16 || dt == DType::F16;
  const double shift = half ? 0.0 : double(r);
  Tensor s = on_gpu(iota(n, -45 + shift, dt)), mx = on_gpu(iota(n, -45 + shift, dt)), mn = on_gpu(iota(n, -45 + shift, dt));
  c.all_reduce(mx, ReduceOp::Max);
  c.all_reduce(mn, ReduceOp::Min);
  CHECK(values(mx) == values(iota(n, -45 + (half ? 0.0 : W - 1), dt)));
  CHECK(values(mn) == values(iota(n, -45, dt)));
  if (half && W > 2) return;
  c.all_reduce(s, ReduceOp::Sum);
  std::vector<double> want(static_cast<size_t>(n));
  const std::vector<double> x = values(iota(n, -45, dt));
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = half ? W * x[size_t(i)] : W * x[size_t(i)] + 0.5 * W * (W - 1);
  CHECK(values(s) == as_stored(want, dt));
}

TEST_CASE("NCCL all_reduce_scalar and all_reduce_int give every rank the same answer", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), r = c.rank();
  CHECK(c.all_reduce_scalar(0.5 + r, ReduceOp::Sum) == Approx(0.5 * W + W * (W - 1) / 2.0));
  CHECK(c.all_reduce_scalar(-1e300 * (r + 1), ReduceOp::Min) == -1e300 * W);
  CHECK(c.all_reduce_int(int64_t(1) << 40, ReduceOp::Sum) == (int64_t(W) << 40));
  CHECK(c.all_reduce_int(-7 + 3 * r, ReduceOp::Max) == -7 + 3 * (W - 1));
}

TEST_CASE("NCCL all_to_all, all_gather and broadcast move every dtype", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), me = c.rank();
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I32, DType::I64, DType::BF16, DType::F16);
  INFO(dtype_name(dt));
  const int64_t chunk = 7, cols = 13;
  SECTION("all_to_all: chunk r of every rank goes to rank r, in sender order") {
    // send row (dst * chunk + j), column k = 1000 me + 100 dst + 13 j + k
    std::vector<double> send_v, want;
    for (int dst = 0; dst < W; ++dst)
      for (int64_t j = 0; j < chunk; ++j)
        for (int64_t k = 0; k < cols; ++k) send_v.push_back(1000.0 * me + 100 * dst + 13 * j + k);
    for (int src = 0; src < W; ++src)
      for (int64_t j = 0; j < chunk; ++j)
        for (int64_t k = 0; k < cols; ++k) want.push_back(1000.0 * src + 100 * me + 13 * j + k);
    Tensor host = Tensor::from_vector(send_v, {W * chunk, cols}).to(dt);
    Tensor send = on_gpu(host), recv = on_gpu(Tensor::zeros({W * chunk, cols}, dt));
    c.all_to_all(send, recv);
    CHECK(values(recv) == as_stored(want, dt));
    CHECK(values(send) == values(host));  // the send buffer is untouched
    c.all_to_all(send, send);             // aliased: read from a copy
    CHECK(values(send) == as_stored(want, dt));
  }
  SECTION("all_gather: every rank's rows in rank order, also in place") {
    const int64_t n = chunk * cols;
    std::vector<double> want;
    for (int r = 0; r < W; ++r)
      for (int64_t i = 0; i < n; ++i) want.push_back(100.0 * r + i);
    Tensor send = on_gpu(iota(n, 100.0 * me, dt).reshape({chunk, cols}));
    Tensor recv = on_gpu(Tensor::zeros({W * n}, dt));
    c.all_gather(send, recv);
    CHECK(values(recv) == as_stored(want, dt));
    // in place: this rank's slot of the receive buffer is the send buffer
    Tensor buf = on_gpu(Tensor::zeros({W * n}, dt));
    Tensor mine = buf.narrow(0, me * n, n);
    STRATA_CUDA_CHECK(cudaMemcpyAsync(mine.raw_data(), send.raw_data(), send.nbytes(), cudaMemcpyDeviceToDevice,
                                      cuda::compute_stream()));
    c.all_gather(mine, buf);
    CHECK(values(buf) == as_stored(want, dt));
  }
  SECTION("broadcast: the root's values win") {
    const int root = W - 1;
    Tensor t = on_gpu(iota(chunk * cols, 7.0 * me, dt));
    c.broadcast(t, root);
    CHECK(values(t) == values(iota(chunk * cols, 7.0 * root, dt)));
  }
  SECTION("empty buffers") {
    Tensor e = on_gpu(Tensor::zeros({0, 3}, dt));
    c.all_to_all(e, on_gpu(Tensor::zeros({0, 3}, dt)));
    c.all_gather(e, on_gpu(Tensor::zeros({0}, dt)));
    c.broadcast(e, 0);
    c.all_reduce(e, ReduceOp::Sum);
    c.barrier();
  }
}

TEST_CASE("NCCL collectives see compute-stream writes and large payloads arrive intact", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), me = c.rank();
  // 192 MB of i32: the memset is still running on the compute stream when
  // the collective is issued, so the comm stream must wait for it.
  const int64_t n = int64_t(48) << 20;
  Tensor send = Tensor::empty({n}, DType::I32, gpu_device());
  Tensor recv = Tensor::empty({W * n}, DType::I32, gpu_device());
  STRATA_CUDA_CHECK(cudaMemsetAsync(send.raw_data(), me + 1, send.nbytes(), cuda::compute_stream()));
  c.all_gather(send, recv);
  std::vector<int32_t> got = test::cpu(recv).to_vector<int32_t>();
  int64_t bad = 0;
  for (int r = 0; r < W; ++r) {
    const int32_t b = r + 1, want = b | (b << 8) | (b << 16) | (b << 24);
    for (int64_t i = 0; i < n; ++i) bad += got[size_t(r * n + i)] != want;
  }
  CHECK(bad == 0);
  Tensor big = on_gpu(iota(3 << 20, -5e5 + me, DType::F32));
  c.all_reduce(big, ReduceOp::Max);
  CHECK(values(big) == values(iota(3 << 20, -5e5 + (W - 1), DType::F32)));
}

TEST_CASE("NCCL all_reduce_start leaves several reductions in flight and wait() orders the compute stream", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), me = c.rank();
  // Three buffers filled on the compute stream just before their start, so
  // the comm stream must wait for those writes; read back on the compute
  // stream right after wait(), which must see the sums.
  std::vector<Tensor> bufs;
  std::vector<std::unique_ptr<dist::PendingCollective>> pending;
  const int64_t sizes[] = {7, 1 << 20, 3 << 20};
  for (int k = 0; k < 3; ++k) {
    Tensor t = Tensor::empty({sizes[k]}, DType::F32, gpu_device());
    t.copy_(on_gpu(iota(sizes[k], 100.0 * k + me, DType::F32)));
    pending.push_back(c.all_reduce_start(t, ReduceOp::Sum));
    bufs.push_back(t);
  }
  for (auto& p : pending) CHECK_FALSE(p->done());  // nothing polls the device before wait()
  for (int k = 2; k >= 0; --k) {  // waiting out of order is allowed
    pending[size_t(k)]->wait();
    CHECK(pending[size_t(k)]->done());
    pending[size_t(k)]->wait();  // a second wait returns at once
  }
  for (int k = 0; k < 3; ++k) {
    // sum over ranks of (100 k + r + i) = W (100 k + i) + W (W - 1) / 2
    std::vector<double> want;
    for (int64_t i = 0; i < sizes[k]; ++i) want.push_back(double(W) * (100.0 * k + double(i)) + W * (W - 1) / 2.0);
    CHECK(values(bufs[size_t(k)]) == as_stored(want, DType::F32));
  }
  // an empty buffer, and a handle dropped without wait() (it orders the
  // compute stream after itself, so the buffer may be freed at once)
  c.all_reduce_start(on_gpu(Tensor::zeros({0})), ReduceOp::Sum)->wait();
  {
    Tensor t = on_gpu(iota(1000, me, DType::F32));
    auto dropped = c.all_reduce_start(t, ReduceOp::Max);
  }
  c.barrier();
}

TEST_CASE("NCCL split groups ranks by color and orders them by key", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size(), me = c.rank();
  // color = parity, key = -rank: inside a group, higher world ranks come first
  std::unique_ptr<dist::Communicator> g = c.split(me % 2, -me);
  REQUIRE(g);
  std::vector<int> members;
  for (int r = 0; r < W; ++r)
    if (r % 2 == me % 2) members.push_back(r);
  CHECK(g->size() == int(members.size()));
  int expect_rank = 0;
  for (int r : members)
    if (r > me) ++expect_rank;
  CHECK(g->rank() == expect_rank);
  CHECK(g->name() == c.name() + "/split " + std::to_string(me % 2));
  int64_t expect_sum = 0;
  for (int r : members) expect_sum += r;
  CHECK(g->all_reduce_int(me, ReduceOp::Sum) == expect_sum);
  Tensor x = on_gpu(iota(5, 2, DType::F32));
  g->all_reduce(x, ReduceOp::Max);
  CHECK(values(x) == std::vector<double>{2, 3, 4, 5, 6});
  g->barrier();
  std::unique_ptr<dist::Communicator> gg = g->split(0, 0);
  CHECK(gg->size() == g->size());
  gg->barrier();
}

TEST_CASE("NcclCommunicator rejects host buffers and bad arguments, naming the collective", "[cuda][nccl]") {
  dist::NcclCommunicator& c = nccl();
  const int W = c.size();
  Tensor g = on_gpu(Tensor::zeros({4 * W, 3}));
  REQUIRE_THROWS_WITH(c.all_reduce(Tensor::zeros({3}), ReduceOp::Sum),
                      Catch::Contains("all_reduce") && Catch::Contains("not on a GPU"));
  REQUIRE_THROWS_WITH(c.all_reduce(g.transpose(0, 1), ReduceOp::Sum),
                      Catch::Contains("all_reduce") && Catch::Contains("not contiguous"));
  REQUIRE_THROWS_WITH(c.all_reduce(Tensor(), ReduceOp::Sum), Catch::Contains("undefined"));
  REQUIRE_THROWS_WITH(c.all_to_all(g, on_gpu(Tensor::zeros({4 * W, 4}))), Catch::Contains("all_to_all"));
  REQUIRE_THROWS_WITH(c.all_to_all(g, on_gpu(Tensor::zeros({4 * W, 3}, DType::F64))), Catch::Contains("all_to_all"));
  REQUIRE_THROWS_WITH(c.all_to_all(g, Tensor::zeros({4 * W, 3})),
                      Catch::Contains("all_to_all") && Catch::Contains("not on a GPU"));
  REQUIRE_THROWS_WITH(c.all_gather(g, on_gpu(Tensor::zeros({12 * W * W + 1}))), Catch::Contains("all_gather"));
  REQUIRE_THROWS_WITH(c.broadcast(g, W), Catch::Contains("broadcast") && Catch::Contains("root " + std::to_string(W)));
  REQUIRE_THROWS_WITH(c.broadcast(g, -1), Catch::Contains("root -1"));
  REQUIRE_THROWS_WITH(c.split(-2, 0), Catch::Contains("color"));
  CHECK_FALSE(c.aborted());  // argument errors are caught before NCCL sees them
  c.barrier();
}

TEST_CASE("Host communicators refuse GPU buffers; LocalCommunicator copies on either", "[cuda][nccl]") {
  Tensor g = on_gpu(iota(12, 1, DType::F32).reshape({4, 3}));
  HostOnly host;
  REQUIRE_THROWS_WITH(host.all_reduce(g, ReduceOp::Sum),
                      Catch::Contains("all_reduce") && Catch::Contains("GPU buffers need the NCCL communicator"));
  REQUIRE_THROWS_WITH(host.all_to_all(g, g), Catch::Contains("all_to_all") && Catch::Contains("NCCL"));
  REQUIRE_THROWS_WITH(host.all_gather(g, g.reshape({12})), Catch::Contains("all_gather"));
  REQUIRE_THROWS_WITH(host.broadcast(g, 0), Catch::Contains("broadcast"));

  dist::LocalCommunicator local;
  Tensor recv = on_gpu(Tensor::zeros({4, 3}));
  local.all_to_all(g, recv);
  CHECK(values(recv) == values(g));
  Tensor gathered = on_gpu(Tensor::zeros({12}));
  local.all_gather(g, gathered);
  CHECK(values(gathered) == values(g));
  Tensor h = on_gpu(Tensor::zeros({3}, DType::BF16));
  local.all_reduce(h, ReduceOp::Sum);  // 16-bit floats are fine on a GPU (NCCL reduces them) ...
  REQUIRE_THROWS_WITH(local.all_reduce(Tensor::zeros({3}, DType::BF16), ReduceOp::Sum),
                      Catch::Contains("bf16"));  // ... not on the host (MPI cannot)
  REQUIRE_THROWS_WITH(local.all_to_all(g, Tensor::zeros({4, 3})), Catch::Contains("different devices"));
}

TEST_CASE("NcclOptions read the timeout from STRATA_NCCL_TIMEOUT_S", "[cuda][nccl]") {
  {
    test::ScopedEnv e("STRATA_NCCL_TIMEOUT_S", "12.5");
    CHECK(dist::NcclOptions::from_env().timeout_s == 12.5);
  }
  {
    test::ScopedEnv e("STRATA_NCCL_TIMEOUT_S", "soon");
    REQUIRE_THROWS_WITH(dist::NcclOptions::from_env(), Catch::Contains("STRATA_NCCL_TIMEOUT_S"));
  }
  {
    test::ScopedEnv e("STRATA_NCCL_TIMEOUT_S", ""), c("STRATA_COLLECTIVE_TIMEOUT", "");
    CHECK(dist::NcclOptions::from_env().timeout_s == 600);
  }
  {  // the job-wide collective timeout applies to NCCL too when the NCCL one is unset
    test::ScopedEnv e("STRATA_NCCL_TIMEOUT_S", ""), c("STRATA_COLLECTIVE_TIMEOUT", "7");
    CHECK(dist::NcclOptions::from_env().timeout_s == 7);
  }
}
