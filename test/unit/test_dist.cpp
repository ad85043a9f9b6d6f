// dist: communicators, gradient all-reduce, replica checks, expert groups and
// the trainer's data-parallel rules. Every collective test is written for any
// world size: the plain unit run checks it on one process (LocalCommunicator),
// test/mpi/data_parallel.sh runs the [dist] tests under `mpirun -np 3`
// (MpiCommunicator), where every rank must compute the same expectations.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>

#include "strata/autograd/node.h"
#include "strata/autograd/ops.h"
#include "strata/core/philox.h"
#include "strata/dist/agree.h"
#include "strata/dist/environment.h"
#include "strata/dist/grad_sync.h"
#include "strata/dist/groups.h"
#include "strata/train/trainer.h"
#include "../scoped_env.h"
#include "test_util.h"

#ifdef STRATA_WITH_MPI
#include "strata/dist/mpi_communicator.h"
#endif

using namespace strata;
using dist::ReduceOp;

namespace {

// One Environment for the whole binary: MPI when run under mpirun.
dist::Communicator& world() {
  static std::unique_ptr<dist::Environment> env = std::make_unique<dist::Environment>();
  return env->world();
}

std::vector<double> values(const Tensor& t) { return t.contiguous().to_vector<double>(); }

// A float tensor [n] with x[i] = base + i.
Tensor iota(int64_t n, double base, DType dt) {
  Tensor t = Tensor::empty({n}, DType::F64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = base + double(i);
  return t.to(dt);
}


}  // namespace

TEST_CASE("dist::world() is the Environment's world, ranks within its size", "[dist]") {
  dist::Communicator& w = world();
  REQUIRE(&dist::world() == &w);
  REQUIRE(w.size() >= 1);
  REQUIRE(w.rank() >= 0);
  REQUIRE(w.rank() < w.size());
  REQUIRE(dist::Environment::current() != nullptr);
  REQUIRE(dist::Environment::current()->info().size == w.size());
  REQUIRE(dist::Environment::current()->info().local_rank < dist::Environment::current()->info().local_size);
  REQUIRE(dist::make_world_communicator()->size() == w.size());
}

TEST_CASE("LocalCommunicator collectives are identities and copies", "[dist]") {
  dist::LocalCommunicator c;
  REQUIRE(c.rank() == 0);
  REQUIRE(c.size() == 1);
  Tensor x = iota(7, 1.5, DType::F32);
  c.all_reduce(x, ReduceOp::Sum);
  REQUIRE(values(x) == values(iota(7, 1.5, DType::F32)));
  REQUIRE(c.all_reduce_scalar(2.25, ReduceOp::Max) == 2.25);
  REQUIRE(c.all_reduce_int(-7, ReduceOp::Min) == -7);
  Tensor send = test::rand({4, 3}, 1), recv = Tensor::zeros({4, 3});
  c.all_to_all(send, recv);
  test::require_close(recv, send, 0, 0);
  Tensor gathered = Tensor::zeros({12});
  c.all_gather(send, gathered);
  test::require_close(gathered, send.reshape({12}), 0, 0);
  c.broadcast(send, 0);
  auto sub = c.split(3, 0);
  REQUIRE(sub->size() == 1);
}

TEST_CASE("Communicators reject the arguments MPI would choke on", "[dist]") {
  dist::LocalCommunicator local;
  dist::Communicator& c = GENERATE(0, 1) == 0 ? static_cast<dist::Communicator&>(local) : world();
  const int64_t W = c.size();
  SECTION("all_reduce needs a contiguous f32/f64/i32/i64 tensor") {
    REQUIRE_THROWS_WITH(c.all_reduce(test::non_contiguous(test::rand({3, 4}, 2)), ReduceOp::Sum),
                        Catch::Contains("all_reduce") && Catch::Contains("not contiguous"));
    REQUIRE_THROWS_WITH(c.all_reduce(Tensor::zeros({3}, DType::F16), ReduceOp::Sum),
                        Catch::Contains("all_reduce") && Catch::Contains("f16"));
    REQUIRE_THROWS_WITH(c.all_reduce(Tensor(), ReduceOp::Sum), Catch::Contains("undefined"));
  }
  SECTION("all_to_all needs equal shapes that split into size() chunks") {
    REQUIRE_THROWS_WITH(c.all_to_all(Tensor::zeros({W, 3}), Tensor::zeros({W, 4})), Catch::Contains("all_to_all"));
    REQUIRE_THROWS_WITH(c.all_to_all(Tensor::zeros({W, 3}), Tensor::zeros({W, 3}, DType::F64)),
                        Catch::Contains("all_to_all"));
    if (W > 1)
      REQUIRE_THROWS_WITH(c.all_to_all(Tensor::zeros({W + 1, 2}), Tensor::zeros({W + 1, 2})),
                          Catch::Contains("equal row chunks"));
  }
  SECTION("all_gather needs room for every rank") {
    REQUIRE_THROWS_WITH(c.all_gather(Tensor::zeros({3}), Tensor::zeros({3 * W + 1})),
                        Catch::Contains("all_gather"));
  }
  SECTION("broadcast needs a root inside the world, split a color >= 0") {
    REQUIRE_THROWS_WITH(c.broadcast(Tensor::zeros({2}), int(W)), Catch::Contains("broadcast"));
    REQUIRE_THROWS_WITH(c.broadcast(Tensor::zeros({2}), -1), Catch::Contains("root -1"));
    REQUIRE_THROWS_WITH(c.split(-2, 0), Catch::Contains("color"));
  }
}

TEST_CASE("all_reduce sums, maxes and mins every dtype over the world", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), r = c.rank();
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I32, DType::I64);
  const int64_t n = GENERATE(1, 7, 4099);
  // rank r holds 10 r + i: sum 10 W(W-1)/2 + W i, max 10 (W-1) + i, min i
  Tensor s = iota(n, 10.0 * r, dt), mx = iota(n, 10.0 * r, dt), mn = iota(n, 10.0 * r, dt);
  c.all_reduce(s, ReduceOp::Sum);
  c.all_reduce(mx, ReduceOp::Max);
  c.all_reduce(mn, ReduceOp::Min);
  std::vector<double> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = 5.0 * W * (W - 1) + double(W) * double(i);
  REQUIRE(values(s) == want);
  test::require_close(mx, iota(n, 10.0 * (W - 1), dt), 0, 0);
  test::require_close(mn, iota(n, 0.0, dt), 0, 0);
}

TEST_CASE("Large payloads (the rendezvous-then-blocking path) arrive intact", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const int64_t n = 300001;  // 1.2 MB of f32, over the 256 KiB rendezvous size
  Tensor s = iota(n, 3.0 * me, DType::F32);
  c.all_reduce(s, ReduceOp::Sum);
  std::vector<double> got = values(s), want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = 1.5 * W * (W - 1) + double(W) * double(i);
  REQUIRE(got == want);
  // all_to_all: chunk for rank d from rank me holds 1e6 me + 1e3 d + row
  const int64_t rows = 100, cols = 1000;
  Tensor send = Tensor::empty({W * rows, cols}, DType::F64);
  for (int d = 0; d < W; ++d) send.narrow(0, d * rows, rows).fill_(1e6 * me + 1e3 * d);
  Tensor recv = Tensor::empty({W * rows, cols}, DType::F64);
  c.all_to_all(send, recv);
  for (int src = 0; src < W; ++src) {
    std::vector<double> chunk = values(recv.narrow(0, src * rows, rows));
    REQUIRE(std::all_of(chunk.begin(), chunk.end(), [&](double v) { return v == 1e6 * src + 1e3 * me; }));
  }
  Tensor all = Tensor::empty({W * n}, DType::F32);
  c.all_gather(iota(n, double(me), DType::F32), all);
  for (int r = 0; r < W; ++r) REQUIRE(values(all.narrow(0, r * n, n)) == values(iota(n, double(r), DType::F32)));
  Tensor b = iota(n, 10.0 * me, DType::F64);
  c.broadcast(b, 0);
  REQUIRE(values(b) == values(iota(n, 0.0, DType::F64)));
}

TEST_CASE("all_reduce_scalar and all_reduce_int give every rank the same answer", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), r = c.rank();
  REQUIRE(c.all_reduce_scalar(0.5 + r, ReduceOp::Sum) == Approx(0.5 * W + W * (W - 1) / 2.0));
  REQUIRE(c.all_reduce_scalar(-1.0 * r, ReduceOp::Min) == -(W - 1));
  REQUIRE(c.all_reduce_int(int64_t(1) << 40, ReduceOp::Sum) == int64_t(W) << 40);
  REQUIRE(c.all_reduce_int(r * 3, ReduceOp::Max) == 3 * (W - 1));
}

TEST_CASE("all_to_all delivers chunk r of every rank to rank r, in sender order", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const DType dt = GENERATE(DType::F32, DType::F64, DType::I64);
  const int64_t chunk = GENERATE(1, 3), cols = 5;
  const bool in_place = GENERATE(false, true);
  // send row (dst * chunk + j), column k = 1000 me + 100 dst + 10 j + k
  Tensor send = Tensor::empty({W * chunk, cols}, DType::F64);
  double* p = send.data<double>();
  for (int dst = 0; dst < W; ++dst)
    for (int64_t j = 0; j < chunk; ++j)
      for (int64_t k = 0; k < cols; ++k) p[(dst * chunk + j) * cols + k] = 1000.0 * me + 100 * dst + 10 * j + k;
  send = send.to(dt);
  Tensor recv = in_place ? send : Tensor::zeros({W * chunk, cols}, dt);
  c.all_to_all(send, recv);
  std::vector<double> got = values(recv);
  for (int src = 0; src < W; ++src)
    for (int64_t j = 0; j < chunk; ++j)
      for (int64_t k = 0; k < cols; ++k)
        REQUIRE(got[size_t((src * chunk + j) * cols + k)] == 1000.0 * src + 100 * me + 10 * j + k);
}

TEST_CASE("all_gather collects every rank's rows in rank order", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  Tensor send = iota(6, 100.0 * me, DType::F32).reshape({2, 3});
  Tensor recv = Tensor::zeros({2 * W, 3});
  c.all_gather(send, recv);
  std::vector<double> got = values(recv);
  for (int r = 0; r < W; ++r)
    for (int i = 0; i < 6; ++i) REQUIRE(got[size_t(r * 6 + i)] == 100.0 * r + i);
}

TEST_CASE("broadcast copies the root's values to every rank", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const int root = W - 1;
  Tensor t = iota(9, 7.0 * me, DType::F64);
  c.broadcast(t, root);
  test::require_close(t, iota(9, 7.0 * root, DType::F64), 0, 0);
  std::vector<double> v{double(me), 2.0 * me};
  dist::broadcast_values(c, v, 0);
  REQUIRE(v == std::vector<double>{0.0, 0.0});
}

TEST_CASE("split groups ranks by color and orders them by key", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  // color = parity, key = -rank: inside a group, higher world ranks come first
  auto g = c.split(me % 2, -me);
  std::vector<int> members;
  for (int r = 0; r < W; ++r)
    if (r % 2 == me % 2) members.push_back(r);
  REQUIRE(g->size() == int(members.size()));
  int expect_rank = 0;
  for (int r : members)
    if (r > me) ++expect_rank;
  REQUIRE(g->rank() == expect_rank);
  int64_t expect_sum = 0;
  for (int r : members) expect_sum += r;
  REQUIRE(g->all_reduce_int(me, ReduceOp::Sum) == expect_sum);
  if (W > 1) REQUIRE(g->name() != c.name());  // errors name the group they happen in
}

TEST_CASE("any_rank is true on every rank when one rank says so", "[dist]") {
  dist::Communicator& c = world();
  REQUIRE(dist::any_rank(c, c.rank() == c.size() - 1));
  REQUIRE_FALSE(dist::any_rank(c, false));
  REQUIRE(dist::any_rank(c, true));
}

TEST_CASE("encode_sequences and decode_sequences round-trip and reject damage", "[dist]") {
  std::vector<std::vector<int32_t>> seqs{{5, 6, 7}, {}, {42}, {1, 2}};
  std::vector<int32_t> flat = dist::encode_sequences(seqs);
  REQUIRE(flat.size() == 1 + 4 + 6);
  REQUIRE(dist::decode_sequences(flat.data(), int64_t(flat.size())) == seqs);
  flat.resize(flat.size() + 3, 0);  // padding at the end is ignored
  REQUIRE(dist::decode_sequences(flat.data(), int64_t(flat.size())) == seqs);
  std::vector<int32_t> empty = dist::encode_sequences({});
  REQUIRE(dist::decode_sequences(empty.data(), 1).empty());
  std::vector<int32_t> bad{2, 3, 100, 1, 2};
  REQUIRE_THROWS_WITH(dist::decode_sequences(bad.data(), int64_t(bad.size())), Catch::Contains("decode_sequences"));
  std::vector<int32_t> bad_count{9};
  REQUIRE_THROWS_WITH(dist::decode_sequences(bad_count.data(), 1), Catch::Contains("no valid count"));
}

TEST_CASE("all_gather_sequences returns every rank's sequences in rank order", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  auto make = [](int r) {  // rank r: r + 1 sequences, one of them empty, lengths differ by rank
    std::vector<std::vector<int32_t>> s;
    for (int i = 0; i <= r; ++i) {
      std::vector<int32_t> q;
      for (int k = 0; k < (i == 1 ? 0 : 2 * r + i + 1); ++k) q.push_back(100 * r + 10 * i + k);
      s.push_back(q);
    }
    return s;
  };
  auto all = dist::all_gather_sequences(c, make(me));
  REQUIRE(int(all.size()) == W);
  for (int r = 0; r < W; ++r) REQUIRE(all[size_t(r)] == make(r));
}

TEST_CASE("Expert placement with E >= W gives each rank E/W consecutive experts", "[dist]") {
  const int E = 8;
  const int W = GENERATE(1, 2, 4, 8);
  dist::ExpertPlacement p = dist::plan_expert_placement(E, W);
  REQUIRE(p.local_experts == E / W);
  REQUIRE(p.replicas == 1);
  REQUIRE(p.group_size == W);
  std::set<int> covered;
  for (int r = 0; r < W; ++r) {
    REQUIRE(p.first_expert(r) == r * E / W);
    REQUIRE(p.expert_group_color(r) == 0);
    for (int e = p.first_expert(r); e < p.first_expert(r) + p.local_experts; ++e) {
      covered.insert(e);
      REQUIRE(p.group_rank_of_expert(e) == r);
    }
  }
  REQUIRE(covered.size() == size_t(E));
}

TEST_CASE("Expert placement with E < W replicates each expert W/E times", "[dist]") {
  const int W = 8;
  const int E = GENERATE(1, 2, 4);
  dist::ExpertPlacement p = dist::plan_expert_placement(E, W);
  REQUIRE(p.local_experts == 1);
  REQUIRE(p.replicas == W / E);
  REQUIRE(p.group_size == E);
  std::map<int, std::vector<int>> replica_groups, expert_groups;
  for (int r = 0; r < W; ++r) {
    REQUIRE(p.first_expert(r) == r % E);
    replica_groups[p.replica_group_color(r)].push_back(r);
    expert_groups[p.expert_group_color(r)].push_back(r);
  }
  // fairseq's layout: expert groups are blocks of E consecutive ranks, each
  // holding every expert once; replica group e = {e, e + E, ...}
  REQUIRE(int(expert_groups.size()) == W / E);
  for (auto& [g, ranks] : expert_groups) {
    REQUIRE(int(ranks.size()) == E);
    for (int i = 0; i < E; ++i) REQUIRE(p.first_expert(ranks[size_t(i)]) == i);
  }
  REQUIRE(int(replica_groups.size()) == E);
  for (auto& [e, ranks] : replica_groups)
    for (int r : ranks) REQUIRE(p.first_expert(r) == e);
}

TEST_CASE("Expert placement refuses counts that do not divide", "[dist]") {
  REQUIRE_THROWS_WITH(dist::plan_expert_placement(6, 4), Catch::Contains("expert placement") && Catch::Contains("divide"));
  REQUIRE_THROWS_WITH(dist::plan_expert_placement(3, 2), Catch::Contains("expert placement"));
  REQUIRE_THROWS_WITH(dist::plan_expert_placement(0, 2), Catch::Contains("expert placement"));
  dist::ExpertPlacement p = dist::plan_expert_placement(4, 2);
  REQUIRE_THROWS_WITH(p.first_expert(2), Catch::Contains("rank 2"));
  REQUIRE_THROWS_WITH(p.group_rank_of_expert(4), Catch::Contains("expert 4"));
}

TEST_CASE("make_expert_groups splits the world as planned", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const int E = GENERATE_COPY(1, W, 2 * W);
  dist::ExpertGroups g = dist::make_expert_groups(c, E);
  REQUIRE(g.expert->size() == g.placement.group_size);
  REQUIRE(g.replica->size() == g.placement.replicas);
  REQUIRE(g.expert->rank() == me % g.placement.group_size);
  // the replica group holds the same experts: summing the first expert id
  // over it gives replicas * id
  const int first = g.placement.first_expert(me);
  REQUIRE(g.replica->all_reduce_int(first, ReduceOp::Sum) == int64_t(first) * g.placement.replicas);
  // the expert group holds every expert exactly once
  REQUIRE(g.expert->all_reduce_int(g.placement.local_experts, ReduceOp::Sum) == E);
}

TEST_CASE("plan_buckets packs consecutive same-dtype parameters up to the byte limit", "[dist]") {
  using P = std::pair<DType, int64_t>;
  // 4-byte floats, 64-byte buckets = 16 floats
  auto b = dist::plan_buckets({P{DType::F32, 10}, P{DType::F32, 6}, P{DType::F32, 1}, P{DType::F64, 2},
                               P{DType::F64, 2}, P{DType::F32, 100}, P{DType::F32, 3}},
                              64);
  REQUIRE(b.size() == 5);
  REQUIRE(b[0].params == std::vector<size_t>{0, 1});  // 16 floats exactly fill it
  REQUIRE(b[0].numel == 16);
  REQUIRE(b[1].params == std::vector<size_t>{2});     // the f64s start a new bucket
  REQUIRE(b[2].params == std::vector<size_t>{3, 4});
  REQUIRE(b[2].dtype == DType::F64);
  REQUIRE(b[3].params == std::vector<size_t>{5});     // larger than a bucket: alone
  REQUIRE(b[3].numel == 100);
  REQUIRE(b[4].params == std::vector<size_t>{6});
  REQUIRE(dist::plan_buckets({}, 64).empty());
}

TEST_CASE("all_reduce_gradients sums the selected gradients over the world", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const size_t bucket = GENERATE(size_t(48), size_t(25) << 20);
  auto leaf = [](const Shape& s, DType dt, uint64_t seed) {
    Tensor t = test::rand(s, seed, dt);
    t.set_requires_grad(true);
    return t;
  };
  // grads: rank r's gradient of parameter k is rand(seed 100 k + r)
  dist::NamedTensors params{{"a.weight", leaf({3, 5}, DType::F32, 1)},
                            {"b.bias", leaf({7}, DType::F32, 2)},
                            {"c.weight", leaf({2, 2}, DType::F64, 3)},
                            {"only_rank0", leaf({4}, DType::F32, 4)},
                            {"never", leaf({3}, DType::F32, 5)},
                            {"frozen.weight", leaf({2}, DType::F32, 6)}};
  auto grad_of = [&](size_t k, int r) { return test::rand(params[k].second.shape(), 100 * k + r, params[k].second.dtype()); };
  for (size_t k : {0, 1, 2, 5}) params[k].second.set_grad(k == 0 ? test::non_contiguous(grad_of(k, me)) : grad_of(k, me));
  if (me == 0) params[3].second.set_grad(grad_of(3, 0));
  dist::GradSyncOptions opt;
  opt.bucket_bytes = bucket;
  dist::GradSyncStats st = dist::all_reduce_gradients(
      c, params, [](const std::string& n) { return n.rfind("frozen.", 0) != 0; }, opt);
  for (size_t k : {0, 1, 2}) {
    std::vector<double> e(size_t(params[k].second.numel()), 0.0);
    for (int r = 0; r < W; ++r) {
      std::vector<double> g = values(grad_of(k, r));
      for (size_t i = 0; i < e.size(); ++i) e[i] += g[i];
    }
    std::vector<double> got = values(params[k].second.grad());
    for (size_t i = 0; i < e.size(); ++i) REQUIRE(got[i] == Approx(e[i]).epsilon(1e-5));
  }
  // a gradient only rank 0 had: every rank gets rank 0's values
  REQUIRE(params[3].second.grad().defined());
  test::require_close(params[3].second.grad(), grad_of(3, 0), 0, 0);
  // no rank had one: still none (Adam skips it, as on one process)
  REQUIRE_FALSE(params[4].second.grad().defined());
  // not selected: untouched
  test::require_close(params[5].second.grad(), grad_of(5, me), 0, 0);
  REQUIRE(st.without_grad == 1);
  if (W > 1) {
    REQUIRE(st.params == 4);
    // Buckets in reverse registration order, every selected parameter moved:
    // 48 B: [never only_rank0] [c] [b] [a]; 25 MB: [never only_rank0] [c] [b a]
    // (a dtype change starts a bucket)
    REQUIRE(st.buckets == (bucket == 48 ? 4 : 3));
  } else {
    REQUIRE(st.buckets == 0);
  }
}

namespace {

// A two-rank communicator whose peer always holds the same values as this
// rank: a sum doubles the buffer, max and min keep it. Started all-reduces
// stay "in flight" until waited for (as on NCCL), so the reducer's deferred
// write-back is exercised; `log` records the calls in order.
class MirrorCommunicator final : public dist::Communicator {
 public:
  std::vector<std::string> log;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string name() const override { return "mirror"; }
  void all_reduce(const Tensor& t, ReduceOp op) override {
    log.push_back("all_reduce " + std::to_string(t.numel()));
    if (op == ReduceOp::Sum) double_in_place(t);
  }
  std::unique_ptr<dist::PendingCollective> all_reduce_start(const Tensor& t, ReduceOp op) override {
    log.push_back("start " + std::to_string(t.numel()));
    struct Pending final : dist::PendingCollective {
      Tensor t;
      bool sum, waited = false;
      void wait() override {
        if (!waited && sum) double_in_place(t);
        waited = true;
      }
      bool done() const override { return waited; }
    };
    auto p = std::make_unique<Pending>();
    p->t = t;
    p->sum = op == ReduceOp::Sum;
    return p;
  }
  double all_reduce_scalar(double v, ReduceOp) override { return v; }
  int64_t all_reduce_int(int64_t v, ReduceOp) override { return v; }
  void all_to_all(const Tensor&, const Tensor&) override { FAIL("not used"); }
  void all_gather(const Tensor&, const Tensor&) override { FAIL("not used"); }
  void broadcast(const Tensor&, int) override { FAIL("not used"); }
  void barrier() override {}
  std::unique_ptr<dist::Communicator> split(int, int) override { return nullptr; }

 private:
  static void double_in_place(const Tensor& t) { t.copy_(mul(t.to(DType::F64), 2.0).to(t.dtype())); }
};

}  // namespace

TEST_CASE("GradientReducer starts buckets during the backward, in order, and sums like the blocking path", "[dist]") {
  // y = sum(w3 * (w2 * (w1 * x))): the backward finishes w3 first, w1 last.
  // `skipped` is registered between w1 and w2 but not used, so its bucket
  // (and every later one) waits for finish().
  auto leaf = [](uint64_t seed) {
    Tensor t = Tensor::uniform({5}, seed, 0, -1.0, 1.0, DType::F32);
    t.set_requires_grad(true);
    return t;
  };
  dist::NamedTensors params{{"w1", leaf(1)}, {"skipped", leaf(2)}, {"w2", leaf(3)}, {"w3", leaf(4)}};
  const Tensor x = Tensor::uniform({5}, 9, 0, -1.0, 1.0, DType::F32);
  auto loss = [&] { return sum(mul(params[3].second, mul(params[2].second, mul(params[0].second, x)))); };
  // Reference: one process's gradients, doubled by the mirror peer.
  loss().backward();
  std::vector<Tensor> expected;
  for (auto& [name, p] : params) {
    expected.push_back(p.grad().defined() ? mul(p.grad(), 2.0) : Tensor());
    p.zero_grad();
  }

  MirrorCommunicator comm;
  dist::GradSyncOptions opt;
  opt.bucket_bytes = 20;  // one 5-float parameter per bucket
  dist::GradientReducer reducer(comm, params, {}, opt);
  std::vector<size_t> starts_at_report;
  autograd::run_backward(loss(), Tensor(), [&](const Tensor& leaf) {
    reducer.gradient_ready(leaf);
    starts_at_report.push_back(comm.log.size());
  });
  // w3's bucket starts at its report, inside the backward; then w2's.
  REQUIRE(starts_at_report.size() == 3);
  CHECK(starts_at_report[0] == 1);
  CHECK(reducer.started_early() == 2);
  CHECK(comm.log == std::vector<std::string>{"start 5", "start 5"});
  const dist::GradSyncStats st = reducer.finish();
  // then the skipped one and w1, then the gradient flags
  CHECK(comm.log == std::vector<std::string>{"start 5", "start 5", "start 5", "start 5", "all_reduce 4"});
  CHECK(st.buckets == 4);
  CHECK(st.params == 3);
  CHECK(st.without_grad == 1);
  for (size_t k = 0; k < params.size(); ++k) {
    INFO(params[k].first);
    if (expected[k].defined())
      test::require_close(params[k].second.grad(), expected[k], 0, 0);
    else
      CHECK(!params[k].second.grad().defined());
  }
  REQUIRE_THROWS_WITH(reducer.finish(), Catch::Contains("twice"));
}

TEST_CASE("GradientReducer gives every rank the sums whatever order its gradients became ready in", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  const size_t bucket = GENERATE(size_t(40), size_t(1) << 20);
  const size_t n = 6;
  dist::NamedTensors params;
  for (size_t k = 0; k < n; ++k) {
    Tensor t = Tensor::zeros({int64_t(3 + k)}, DType::F32);
    t.set_requires_grad(true);
    params.emplace_back("p" + std::to_string(k), t);
  }
  auto grad_of = [&](size_t k, int r) { return Tensor::uniform({int64_t(3 + k)}, 100 * k + uint64_t(r), 0, -1.0, 1.0, DType::F32); };
  // rank 1 has no gradient for p2; nobody has one for p5
  auto has = [](size_t k, int r) { return k != 5 && !(k == 2 && r == 1); };
  for (size_t k = 0; k < n; ++k)
    if (has(k, me)) params[k].second.set_grad(grad_of(k, me));
  dist::GradSyncOptions opt;
  opt.bucket_bytes = bucket;
  dist::GradientReducer reducer(c, params, {}, opt);
  // Each rank reports a different subset in a different order; the rest is
  // left to finish().
  for (size_t j = 0; j < n; ++j) {
    const size_t k = (j * size_t(me + 1) + size_t(me)) % n;
    if ((k + size_t(me)) % 3 != 0) reducer.gradient_ready(params[k].second);
  }
  reducer.finish();
  for (size_t k = 0; k < n; ++k) {
    INFO("p" << k << " on rank " << me);
    if (k == 5) {
      CHECK(!params[k].second.grad().defined());
      continue;
    }
    std::vector<double> e(3 + k, 0.0);
    for (int r = 0; r < W; ++r)
      if (has(k, r)) {
        std::vector<double> g = values(grad_of(k, r));
        for (size_t i = 0; i < e.size(); ++i) e[i] += g[i];
      }
    std::vector<double> got = values(params[k].second.grad());
    for (size_t i = 0; i < e.size(); ++i) REQUIRE(got[i] == Approx(e[i]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("parameter_hashes change with any value, shape or dtype", "[dist]") {
  Tensor a = test::rand({3, 4}, 7);
  dist::NamedTensors p{{"a", a}};
  const int64_t h = dist::parameter_hashes(p)[0];
  REQUIRE(dist::parameter_hashes({{"a", a.clone()}})[0] == h);
  REQUIRE(dist::parameter_hashes({{"a", test::non_contiguous(a)}})[0] == h);  // values, not layout
  Tensor b = a.clone();
  b.data<float>()[11] = std::nextafter(b.data<float>()[11], 2.0f);
  REQUIRE(dist::parameter_hashes({{"a", b}})[0] != h);
  REQUIRE(dist::parameter_hashes({{"a", a.reshape({4, 3})}})[0] != h);
  REQUIRE(dist::parameter_hashes({{"a", a.to(DType::F64)}})[0] != h);
  REQUIRE(dist::parameter_hashes({{"a", a}, {"skip", b}}, [](const std::string& n) { return n == "a"; }).size() == 1);
}

TEST_CASE("check_replicas_agree passes equal weights and names a parameter that differs", "[dist]") {
  dist::Communicator& c = world();
  const int W = c.size(), me = c.rank();
  dist::NamedTensors p{{"enc.w", test::rand({5, 3}, 11)}, {"dec.w", test::rand({4}, 12)}};
  REQUIRE_NOTHROW(dist::check_replicas_agree(c, p, "in the test"));
  if (W > 1) {
    if (me == W - 1) p[1].second.data<float>()[2] += 1e-3f;
    REQUIRE_THROWS_WITH(dist::check_replicas_agree(c, p, "in the test"),
                        Catch::Contains("'dec.w'") && Catch::Contains("rank(s) " + std::to_string(W - 1)) &&
                            Catch::Contains("in the test"));
    // a filter that leaves the changed parameter out passes
    REQUIRE_NOTHROW(dist::check_replicas_agree(c, p, "filtered", [](const std::string& n) { return n == "enc.w"; }));
  }
}

TEST_CASE("detect_launch reads the MPI launchers' variables", "[dist]") {
  std::map<std::string, std::string> env;
  auto get = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  REQUIRE_FALSE(dist::detect_launch(get).launched);
  env["OMPI_COMM_WORLD_SIZE"] = "4";
  dist::LaunchInfo li = dist::detect_launch(get);
  REQUIRE(li.launched);
  REQUIRE(li.size == 4);
  REQUIRE(li.launcher == "OMPI_COMM_WORLD_SIZE");
  env.clear();
  env["PMI_SIZE"] = "2";
  REQUIRE(dist::detect_launch(get).size == 2);
  env.clear();
  env["PMIX_RANK"] = "0";
  env["SLURM_STEP_NUM_TASKS"] = "8";
  li = dist::detect_launch(get);
  REQUIRE(li.launched);
  REQUIRE(li.size == 8);
  env["STRATA_MPI"] = "0";  // forced single process
  REQUIRE_FALSE(dist::detect_launch(get).launched);
  env.clear();
  env["STRATA_MPI"] = "1";
  REQUIRE(dist::detect_launch(get).launched);
  env["STRATA_MPI"] = "yes";
  REQUIRE_THROWS_WITH(dist::detect_launch(get), Catch::Contains("STRATA_MPI"));
}

#ifdef STRATA_WITH_MPI
TEST_CASE("MpiOptions read the timeout and wait mode from the environment", "[dist]") {
  {
    test::ScopedEnv t("STRATA_COLLECTIVE_TIMEOUT", "12.5"), w("STRATA_MPI_WAIT", "block");
    dist::MpiOptions o = dist::MpiOptions::from_env();
    REQUIRE(o.timeout_s == 12.5);
    REQUIRE(o.wait == dist::MpiOptions::Wait::Block);
  }
  {
    test::ScopedEnv t("STRATA_COLLECTIVE_TIMEOUT", "soon");
    REQUIRE_THROWS_WITH(dist::MpiOptions::from_env(), Catch::Contains("STRATA_COLLECTIVE_TIMEOUT"));
  }
  {
    test::ScopedEnv t("STRATA_COLLECTIVE_TIMEOUT", nullptr), w("STRATA_MPI_WAIT", "spin");
    REQUIRE_THROWS_WITH(dist::MpiOptions::from_env(), Catch::Contains("STRATA_MPI_WAIT"));
  }
}
#endif

TEST_CASE("Each rank trains on slots rank, rank + W, ...; together they cover the window once", "[dist]") {
  REQUIRE(train::rank_slots(1, 4, 3) == std::vector<int64_t>{1, 5, 9});
  REQUIRE(train::rank_slots(0, 1, 2) == std::vector<int64_t>{0, 1});
  const int W = GENERATE(1, 2, 3, 4), U = GENERATE(1, 2, 5);
  std::vector<int> seen(size_t(W * U), 0);
  for (int r = 0; r < W; ++r)
    for (int64_t s : train::rank_slots(r, W, U)) seen.at(size_t(s))++;
  for (int n : seen) REQUIRE(n == 1);
  REQUIRE_THROWS_WITH(train::rank_slots(4, 4, 1), Catch::Contains("rank_slots"));
}

TEST_CASE("Batch random streams depend on the update and the slot, not on the rank", "[dist]") {
  const uint64_t seed = 42;
  // slot 0 keeps the key single-process training always used
  REQUIRE(train::batch_stream_seed(seed, 7, 0) == mix_keys(seed, 7));
  std::set<uint64_t> keys;
  for (int64_t u = 0; u < 20; ++u)
    for (int64_t s = 0; s < 8; ++s) keys.insert(train::batch_stream_seed(seed, u, s));
  REQUIRE(keys.size() == 160);
  REQUIRE(train::batch_stream_seed(seed, 3, 2) == train::batch_stream_seed(seed, 3, 2));
  REQUIRE(train::batch_stream_seed(seed + 1, 3, 2) != train::batch_stream_seed(seed, 3, 2));
}

TEST_CASE("Test hooks come from the environment and are off by default", "[dist]") {
  test::ScopedEnv a("STRATA_TEST_FAIL_RANK", nullptr), b("STRATA_TEST_FAIL_UPDATE", nullptr),
      c("STRATA_TEST_HANG_RANK", nullptr), d("STRATA_TEST_PERTURB_RANK", nullptr);
  train::TestHooks h = train::TestHooks::from_env();
  REQUIRE(h.fail_rank == -1);
  REQUIRE(h.hang_rank == -1);
  REQUIRE(h.perturb_rank == -1);
  {
    test::ScopedEnv x("STRATA_TEST_FAIL_RANK", "1"), y("STRATA_TEST_FAIL_UPDATE", "3");
    h = train::TestHooks::from_env();
    REQUIRE(h.fail_rank == 1);
    REQUIRE(h.fail_update == 3);
  }
  test::ScopedEnv z("STRATA_TEST_HANG_RANK", "one");
  REQUIRE_THROWS_WITH(train::TestHooks::from_env(), Catch::Contains("STRATA_TEST_HANG_RANK"));
}
